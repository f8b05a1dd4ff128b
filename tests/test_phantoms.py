"""Built-in phantoms and load_split: determinism, CT-like content, distinct splits, no global RNG."""

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from ctrobust.data import PhantomDataset, load_split
from ctrobust.data.phantoms import DEFAULT_COUNTS, random_ellipses, shepp_logan, split_seed


def test_shape_dtype_range_and_determinism(global_rng_untouched):
    x = random_ellipses(6, 48, seed=3)
    assert x.shape == (6, 48, 48) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_array_equal(x, random_ellipses(6, 48, seed=3))
    assert not np.array_equal(x, random_ellipses(6, 48, seed=4))
    np.testing.assert_array_equal(x[:2], random_ellipses(2, 48, seed=3))  # item i does not depend on n
    assert len({x[i].tobytes() for i in range(6)}) == 6


def test_ct_like_content():
    x = random_ellipses(12, 64, seed=0)
    for img in x:
        assert img[0, 0] == 0 and img[-1, -1] == 0 and img[0, -1] == 0  # air around the body
        body = img > 0.01  # everything but air (lungs included)
        assert 0.2 < body.mean() < 0.75
        assert img.max() >= 0.8  # bone
        assert 0.3 < np.median(img[img > 0.15]) < 0.6  # mostly soft tissue
        assert len(np.unique(np.round(img, 2))) > 10  # several distinct structures
    dark_lungs = [(img[img.shape[0] // 4: 3 * img.shape[0] // 4] < 0.12).sum() > 0 for img in x]
    assert any(dark_lungs) and not all(img.mean() == x[0].mean() for img in x)


def test_same_anatomy_at_every_size():
    big = random_ellipses(2, 128, seed=7)
    small = random_ellipses(2, 32, seed=7)
    down = np.stack([resize(b, (32, 32), anti_aliasing=True, preserve_range=True) for b in big])
    assert np.abs(down - small).mean() < 0.03
    other = random_ellipses(2, 32, seed=8)
    assert np.abs(other - small).mean() > 3 * np.abs(down - small).mean()


def test_shepp_logan_is_skimage_phantom():
    np.testing.assert_array_equal(shepp_logan(400), shepp_logan_phantom().astype(np.float32))
    s = shepp_logan(64)
    assert s.shape == (64, 64) and s.dtype == np.float32 and 0 <= s.min() and s.max() <= 1
    ref = resize(shepp_logan_phantom(), (64, 64), anti_aliasing=True, preserve_range=True)
    np.testing.assert_allclose(s, ref, atol=1e-6)


def test_phantom_dataset_items(global_rng_untouched):
    ds = PhantomDataset(4, 32, seed=2)
    assert len(ds) == 4 and ds.image_size == 32
    x = ds[1]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32
    np.testing.assert_array_equal(x[0].numpy(), random_ellipses(4, 32, 2)[1])
    x.zero_()  # items are copies
    assert ds[1].abs().sum() > 0


def test_load_split_phantoms_distinct_per_split(global_rng_untouched):
    splits = {s: load_split(None, s, size=32, n_phantoms=3, seed=1) for s in ("train", "val", "test")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 3, "val": 3, "test": 3}
    assert all(d.image_size == 32 for d in splits.values())
    items = {s: {d[i].numpy().tobytes() for i in range(3)} for s, d in splits.items()}
    assert not (items["train"] & items["val"]) and not (items["train"] & items["test"])
    assert not (items["val"] & items["test"])
    assert torch.equal(load_split(None, "val", size=32, n_phantoms=3, seed=1)[2], splits["val"][2])
    assert not torch.equal(load_split(None, "val", size=32, n_phantoms=3, seed=2)[0], splits["val"][0])
    assert len({split_seed(0, s) for s in ("train", "val", "test")}) == 3


def test_load_split_default_counts():
    assert DEFAULT_COUNTS == {"train": 256, "val": 32, "test": 32}
    ds = load_split(None, "val", size=16)
    assert len(ds) == 32 and ds.image_size == 16
    with pytest.raises(ValueError, match="split"):
        load_split(None, "validation")


def test_load_split_file_uses_open_dataset(tmp_path):
    from ctrobust.data.make import make_phantoms

    make_phantoms(tmp_path / "p.h5", n=10, size=16, seed=0, progress=False)
    ds = load_split(tmp_path / "p.h5", "train", size=128)  # size is ignored for a file
    assert ds.image_size == 16 and len(ds) == 8
