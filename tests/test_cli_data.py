"""`ctrobust make-phantoms`, `ctrobust prepare-dicom` and the data_prep/lodopab.py converter, end to end."""

import importlib.util
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ctrobust.cli import main
from ctrobust.data import describe, load_split, open_dataset

from dicom_factory import copy_testdata, write_ct, write_mr

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------- make-phantoms

def test_make_phantoms_matches_builtin_data_and_needs_force(tmp_path, capsys):
    out = tmp_path / "ph.h5"
    argv = ["make-phantoms", "--out", str(out), "--n", "10", "--size", "32", "--seed", "4", "--no-progress"]
    assert main(argv) == 0
    assert "8 train / 1 val / 2 test" in capsys.readouterr().out
    for split, n in (("train", 8), ("val", 1)):
        builtin = load_split(None, split, size=32, n_phantoms=n, seed=4)
        stored = open_dataset(out, split)
        assert len(stored) == n
        for i in range(n):
            assert torch.equal(builtin[i], stored[i])
    test = open_dataset(out, "test")
    from ctrobust.data.phantoms import shepp_logan

    np.testing.assert_array_equal(test[len(test) - 1][0].numpy(), shepp_logan(32))
    assert describe(out)["attrs"]["source"] == "phantoms"

    before = out.read_bytes()
    assert main(argv) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(argv + ["--force", "--seed", "5", "--no-shepp-logan"]) == 0
    assert len(open_dataset(out, "test")) == 1


def test_make_phantoms_bad_fraction_is_user_error(tmp_path, capsys):
    assert main(["make-phantoms", "--out", str(tmp_path / "p.h5"), "--val-fraction", "0.6",
                 "--test-fraction", "0.5", "--no-progress"]) == 1
    assert "must be < 1" in capsys.readouterr().err
    assert not (tmp_path / "p.h5").exists()


# ---------------------------------------------------------------------------------------- prepare-dicom

def _small_tree(root):
    for p in range(3):
        for k in range(2):
            write_ct(root / f"pat{p}" / f"{k}.dcm", (np.arange(32 * 32).reshape(32, 32) + p).astype(np.int16),
                     patient_id=f"ID{p}", patient_name=f"NAME{p}^X", z=float(k))
    copy_testdata("CT_small.dcm", root / "real" / "IM0001")
    write_mr(root / "mr" / "1.dcm", np.zeros((8, 8), np.int16))
    (root / "readme.txt").write_text("not dicom")


def test_prepare_dicom_cli_summary_log_and_force(tmp_path, capsys):
    root = tmp_path / "in"
    _small_tree(root)
    out = tmp_path / "ct.h5"
    argv = ["prepare-dicom", str(root), "--out", str(out), "--size", "32", "--window=-100,900",
            "--val-fraction", "0.25", "--test-fraction", "0.25", "--no-progress"]
    # CT_small's 2.65 mm pixels beside 1 mm pixels: refused, with the sizes, the files and the remedy named
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "pixel sizes differ" in err and "2.65 mm: 1 slice(s)" in err and "real/IM0001" in err
    assert "--fov MM" in err and "--allow-mixed-spacing" in err
    assert not out.exists() and (tmp_path / "ct.log.json").exists()
    argv += ["--fov", "80"]  # every slice 80 mm / 32 px = 2.5 mm
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "CT slices kept           7" in text
    assert "pixel size (mm)   2.50 mm (7)" in text and "warning: pixel sizes" not in text
    assert (tmp_path / "ct.qc" / "qc.md").is_file() and "QC page" in text
    assert "not-ct" in text and "not-dicom" in text
    assert "train" in text and "names input files" in text
    info = describe(out)
    assert info["attrs"]["window"] == "-100,900" and info["attrs"]["window_level"] == -100.0
    assert sum(s["n_patients"] for s in info["splits"].values()) == 4
    log = json.loads((tmp_path / "ct.log.json").read_text())
    assert {Path(s["path"]).name: s["reason"] for s in log["skipped"]} == {"1.dcm": "not-ct", "readme.txt": "not-dicom"}
    # the used files, as named in the input tree, each with the split of its patient
    used = {str(Path(u["path"]).relative_to(root)): (u["split"], u["slices"]) for u in log["used"]}
    assert sorted(used) == ["pat0/0.dcm", "pat0/1.dcm", "pat1/0.dcm", "pat1/1.dcm", "pat2/0.dcm", "pat2/1.dcm",
                            "real/IM0001"]
    assert used["pat0/0.dcm"][0] == used["pat0/1.dcm"][0] and all(n == 1 for _, n in used.values())
    assert sorted({s for s, _ in used.values()}) == ["test", "train", "val"]
    assert "ID0" not in json.dumps(log) and "NAME0" not in json.dumps(log)

    before = out.read_bytes()
    assert main(argv) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(argv + ["--force", "--workers", "2"]) == 0


def test_prepare_dicom_cli_errors(tmp_path, capsys):
    root = tmp_path / "in"
    write_mr(root / "a", np.zeros((8, 8), np.int16))
    out = tmp_path / "x.h5"
    assert main(["prepare-dicom", str(root), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "error: no CT image slice found in 1 file" in err and "1 not-ct" in err
    assert not out.exists()
    assert main(["prepare-dicom", str(tmp_path / "missing"), "--out", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["prepare-dicom", str(root), "--out", str(out), "--window", "soft"])
    assert exc.value.code == 2
    assert "neither a preset" in capsys.readouterr().err


def test_prepare_dicom_cli_interrupt_leaves_nothing(tmp_path, monkeypatch, capsys):
    root = tmp_path / "in"
    _small_tree(root)
    from ctrobust.data import prepare

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "_write_output", interrupted)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["prepare-dicom", str(root), "--out", str(out_dir / "ct.h5"), "--no-progress",
                 "--allow-mixed-spacing"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(out_dir.iterdir()) == []


# ---------------------------------------------------------------------------------------- LoDoPaB converter

def _load_converter():
    spec = importlib.util.spec_from_file_location("lodopab_script", REPO / "data_prep" / "lodopab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_lodopab(folder, rng):
    """LoDoPaB layout: ground_truth_{part}_NNN.hdf5 with 'data' (n, 362, 362) float32 in [0, 1]."""
    folder.mkdir()
    data = {}
    for part, sizes in (("train", (3, 2)), ("validation", (2,)), ("test", (1,))):
        chunks = []
        for k, n in enumerate(sizes):
            x = rng.random((n, 362, 362), dtype=np.float32) * 0.3
            with h5py.File(folder / f"ground_truth_{part}_{k:03d}.hdf5", "w") as f:
                f.create_dataset("data", data=x)
            chunks.append(x)
        data[part] = np.concatenate(chunks)
    (folder / "observation_train_000.hdf5").write_bytes(b"ignored")
    return data


def test_lodopab_converter(tmp_path, capsys):
    from ctrobust.data.lodopab import MU_MAX, lodopab_to_hu

    data = _fake_lodopab(tmp_path / "lodopab", np.random.default_rng(0))
    script = _load_converter()
    out = tmp_path / "lodo.h5"
    assert script.main([str(tmp_path / "lodopab"), "--out", str(out)]) == 0
    assert "5 train / 2 val / 1 test" in capsys.readouterr().out
    train = open_dataset(out, "train")
    assert train.image_size == 362
    np.testing.assert_array_equal(train[3][0].numpy(), data["train"][3])  # native: values kept, file order kept
    np.testing.assert_array_equal(open_dataset(out, "val")[1][0].numpy(), data["validation"][1])
    with h5py.File(out, "r") as f:
        assert f.attrs["source"] == "lodopab"
        np.testing.assert_allclose(f["train"]["pixel_spacing"][:], 260.0 / 362)

    # resized + windowed, limited per part; --force needed
    assert script.main([str(tmp_path / "lodopab"), "--out", str(out), "--size", "32"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert script.main([str(tmp_path / "lodopab"), "--out", str(out), "--size", "32", "--window", "full",
                        "--max-per-part", "4", "--force"]) == 0
    train = open_dataset(out, "train")
    assert len(train) == 4 and train.image_size == 32
    from skimage.transform import resize

    hu = lodopab_to_hu(resize(data["train"][0].astype(np.float64), (32, 32), anti_aliasing=True, preserve_range=True))
    np.testing.assert_allclose(train[0][0].numpy(), np.clip((hu + 1024) / 4095, 0, 1), atol=1e-6)
    # the conversion constants: 0 -> about -1000 HU (air), 1 -> 3071 HU, water (20 / m) -> 0 HU
    np.testing.assert_allclose(lodopab_to_hu(np.array([20.0 / MU_MAX, 1.0])), [0.0, 3071.0], atol=1e-9)
    assert script.main([str(tmp_path), "--out", str(tmp_path / "none.h5")]) == 1
    assert "no ground_truth_" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- the docs' examples

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_prepare_dicom_docs_example_runs_as_documented(tmp_path, monkeypatch, capsys):
    import shlex
    import shutil

    import pydicom

    page = DOCS / "cli" / "prepare-dicom.md"
    example = page.read_text().split("## Example: the two real CT slices")[1].split("## Performance")[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    for name in ("CT_small.dcm", "693_J2KI.dcm", "MR_small.dcm", "rtdose.dcm"):
        shutil.copy(Path(pydicom.__file__).parent / "data" / "test_files" / name, tmp_path / "demo")
    commands = [line for block in _blocks_of(example, "bash") for line in block.splitlines()
                if line.startswith("ctrobust ")]
    outputs = _blocks_of(example, "")
    assert len(commands) == 2 and len(outputs) == 2
    assert main(shlex.split(commands[0])[1:]) == 1  # mixed pixel sizes: refused
    err = capsys.readouterr().err.strip()
    head, tail = outputs[0].strip().split(" ... ")
    assert err.startswith(head) and err.endswith(tail)
    assert main(shlex.split(commands[1])[1:]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(outputs[1].strip())
    # the 2-patient file trains, announcing that there is no validation
    rc = main(["train", "--data", "demo.h5", "--angles", "8", "--max-steps", "1", "--batch-size", "2",
               "--channels", "2", "--depth", "1", "--out", "run", "--no-progress"])
    assert rc == 0 and "training WITHOUT validation" in capsys.readouterr().err


def _blocks_of(text: str, language: str) -> list[str]:
    """The fenced code blocks of ``text`` whose info string is ``language`` ("" for plain blocks)."""
    blocks, current, lang = [], None, None
    for line in text.splitlines():
        if current is None and line.startswith("```"):
            current, lang = [], line[3:].strip()
        elif current is not None and line.strip() == "```":
            if lang == language:
                blocks.append("\n".join(current) + "\n")
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_prepare_volumes_and_write_slices_docs_examples_run(tmp_path, monkeypatch, capsys):
    import shlex

    pytest.importorskip("nibabel")
    monkeypatch.chdir(tmp_path)
    page = DOCS / "cli" / "prepare-volumes.md"
    example = page.read_text().split("## Example")[1]
    exec(_blocks_of(example, "python")[0], {})
    command = _blocks_of(example, "bash")[0].splitlines()[0]
    assert main(shlex.split(command)[1:]) == 0
    assert "CT slices kept          20" in capsys.readouterr().out
    assert describe("vol.h5")["attrs"]["source"] == "nifti"
    arrays = (DOCS / "data.md").read_text().split("## Plain arrays")[1].split("## Quality control")[0]
    exec(_blocks_of(arrays, "python")[0], {})
    assert "{'train': {'patients': 1, 'slices': 10}, 'val': {'patients': 1, 'slices': 10}" in capsys.readouterr().out
