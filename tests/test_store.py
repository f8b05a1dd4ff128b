"""The prepared-slice HDF5 format: writer, lazy dataset (DataLoader workers), describe, clear errors."""

import pickle

import h5py
import numpy as np
import pytest
import torch

from ctrobust.data import describe, open_dataset
from ctrobust.data.store import FORMAT, SliceWriter, atomic_output
from ctrobust.errors import CtrobustError

N = 16


def _write(path, counts=None, size=N, seed=0):
    counts = counts or {"train": 5, "val": 2, "test": 0}
    rng = np.random.default_rng(seed)
    images = {}
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        w = SliceWriter(f, size)
        for split, n in counts.items():
            images[split] = rng.random((n, size, size), dtype=np.float32)
            half = n // 2
            w.append(split, images[split][:half], [f"{split}-a"] * half, "s1", np.arange(half, dtype=float), None)
            w.append(split, images[split][half:], [f"{split}-b"] * (n - half), "s2")
        w.finish({"source": "test", "window": "full"})
    return images


def test_roundtrip_layout_and_dtypes(tmp_path):
    path = tmp_path / "d.h5"
    images = _write(path)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT and f.attrs["format_version"] == 1
        assert f.attrs["n_train"] == 5 and f.attrs["n_val"] == 2 and f.attrs["n_test"] == 0
        g = f["train"]
        assert g["images"].dtype == np.float32 and g["images"].shape == (5, N, N)
        assert g["patient"].dtype == np.dtype("S16") and g["series"].dtype == np.dtype("S16")
        assert g["position"].dtype == np.float64 and g["pixel_spacing"].dtype == np.float32
        np.testing.assert_array_equal(g["position"][:2], [0.0, 1.0])
        assert np.isnan(g["position"][2:]).all() and np.isnan(g["pixel_spacing"][:]).all()
        assert g.attrs["n_patients"] == 2 and g.attrs["n_series"] == 2
        assert f["test"]["images"].shape == (0, N, N)
    ds = open_dataset(path, "train")
    assert len(ds) == 5 and ds.image_size == N
    for i in range(5):
        x = ds[i]
        assert x.dtype == torch.float32 and x.shape == (1, N, N)
        np.testing.assert_array_equal(x[0].numpy(), images["train"][i])
    np.testing.assert_array_equal(ds[-1][0].numpy(), images["train"][4])
    with pytest.raises(IndexError):
        ds[5]
    assert list(ds.patients) == ["train-a"] * 2 + ["train-b"] * 3


def test_dataloader_workers_and_pickle(tmp_path):
    path = tmp_path / "d.h5"
    images = _write(path, {"train": 8, "val": 1, "test": 1})
    ds = open_dataset(path, "train")
    ds[0]  # open the file in this process first: workers must not reuse the handle
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[3][0].numpy(), images["train"][3])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    batches = torch.cat(list(loader))
    assert batches.shape == (8, 1, N, N)
    np.testing.assert_array_equal(batches[:, 0].numpy(), images["train"])


def test_describe(tmp_path):
    path = tmp_path / "d.h5"
    _write(path)
    info = describe(path)
    assert info["format"] == FORMAT and info["image_size"] == N
    assert info["splits"]["train"] == {"n_images": 5, "n_patients": 2, "n_series": 2, "shape": [5, N, N]}
    assert info["splits"]["test"]["n_images"] == 0
    assert info["attrs"]["source"] == "test" and info["bytes"] == path.stat().st_size


def test_clear_errors(tmp_path):
    with pytest.raises(CtrobustError, match="does not exist.*make-phantoms"):
        open_dataset(tmp_path / "missing.h5", "train")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(CtrobustError, match="not an HDF5 file"):
        open_dataset(tmp_path / "text.h5", "train")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["data"] = np.zeros((2, 4, 4))
    with pytest.raises(CtrobustError, match="not a ctrobust prepared-slice file"):
        describe(tmp_path / "other.h5")
    _write(tmp_path / "d.h5")
    with pytest.raises(CtrobustError, match=r"no split 'validation'.*\['test', 'train', 'val'\]"):
        open_dataset(tmp_path / "d.h5", "validation")
    with pytest.raises(CtrobustError, match="split 'test' .* is empty"):
        open_dataset(tmp_path / "d.h5", "test")
    assert len(open_dataset(tmp_path / "d.h5", "test", allow_empty=True)) == 0


def test_atomic_output_refuses_existing_and_cleans_up(tmp_path):
    path = tmp_path / "o.h5"
    path.write_text("old")
    with pytest.raises(CtrobustError, match="already exists.*force=True"):
        with atomic_output(path):
            pass
    with pytest.raises(RuntimeError):
        with atomic_output(path, force=True) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["o.h5"]
    with atomic_output(path, force=True) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["o.h5"]
    with atomic_output(tmp_path / "nope" / "o.h5") as tmp:  # a missing folder is created
        tmp.write_text("new")
    assert (tmp_path / "nope" / "o.h5").read_text() == "new"
    (tmp_path / "file").write_text("x")
    with pytest.raises(CtrobustError, match="is a file"):
        with atomic_output(tmp_path / "file" / "o.h5"):
            pass


def test_writer_rejects_wrong_shapes(tmp_path):
    with h5py.File(tmp_path / "w.h5", "w") as f:
        w = SliceWriter(f, N)
        with pytest.raises(ValueError, match=r"expected images \(k, 16, 16\)"):
            w.append("train", np.zeros((2, N, N + 1)), ["a", "b"], ["a", "b"])
        with pytest.raises(ValueError, match="patient: expected 2 values"):
            w.append("train", np.zeros((2, N, N)), ["a"], ["a", "b"])
        with pytest.raises(ValueError, match="split must be"):
            w.append("training", np.zeros((1, N, N)), ["a"], ["a"])
