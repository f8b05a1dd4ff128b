"""NIfTI volumes (``prepare-volumes``), plain arrays (``write_slices``) and the empty-validation announcement."""

from __future__ import annotations

import json
import warnings

import h5py
import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from ctrobust.cli import main  # noqa: E402
from ctrobust.data import open_dataset, write_slices  # noqa: E402
from ctrobust.data.prepare import pseudonym  # noqa: E402
from ctrobust.data.volumes import axial_slices, prepare_volumes, volume_key  # noqa: E402
from ctrobust.errors import CtrobustError  # noqa: E402


def _body(n=16, k=4, seed=0):
    """HU volume (n, n, k) in RAS+ voxel order: air around a soft-tissue block with random texture."""
    rng = np.random.default_rng(seed)
    hu = np.full((n, n, k), -1000.0)
    hu[3:-3, 2:-2, :] = 40.0 + rng.integers(-60, 60, size=(n - 6, n - 4, k))
    return hu


def _save(path, data, zooms=(1.0, 1.0, 2.5), slope=None, inter=None, dtype=np.float32):
    affine = np.diag([*zooms, 1.0])
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def test_axial_slices_follow_the_affine_whatever_the_voxel_order(tmp_path):
    n_i, n_j, n_k = 5, 6, 3
    data = np.arange(n_i * n_j * n_k, dtype=np.float64).reshape(n_i, n_j, n_k)
    ras = nib.Nifti1Image(data, np.diag([2.0, 1.5, 3.0, 1.0]))
    slices, spacing, positions = axial_slices(ras)
    assert slices.shape == (n_k, n_j, n_i) and spacing == (1.5, 2.0)
    np.testing.assert_allclose(positions, [0.0, 3.0, 6.0])
    # radiological display: the right-anterior voxel (largest i = patient's right, largest j = anterior)
    # is at the top left, the left-posterior voxel (0, 0) at the bottom right
    for k in range(n_k):
        assert slices[k][0, 0] == data[n_i - 1, n_j - 1, k]
        assert slices[k][-1, -1] == data[0, 0, k]
        assert slices[k][0, -1] == data[0, n_j - 1, k]  # anterior, patient's left
    # the same world content stored superior-axis first and flipped (a, b, c) -> (i=b, j=c, k=n_k-1-a)
    stored = np.flip(data.transpose(2, 0, 1), axis=0).copy()
    to_ras_index = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [-1, 0, 0, n_k - 1], [0, 0, 0, 1]], dtype=float)
    other = nib.Nifti1Image(stored, np.diag([2.0, 1.5, 3.0, 1.0]) @ to_ras_index)
    slices2, spacing2, positions2 = axial_slices(other)
    np.testing.assert_array_equal(slices2, slices)
    assert spacing2 == spacing
    np.testing.assert_allclose(positions2, positions)


def test_volume_key():
    assert volume_key("P001/ct.nii.gz") == "P001/ct"
    assert volume_key("scan.NII") == "scan"
    assert volume_key("sub-07/ses-1/ct.nii.gz", r"sub-(\d+)") == "07"
    assert volume_key("x/ct.nii", r"sub-\d+") is None


def test_scl_slope_inter_are_hu_and_the_window_is_applied(tmp_path):
    stored = np.zeros((16, 16, 2), np.int16)
    stored[2:14, 2:14, :] = 532  # HU = 2 * 532 - 1024 = 40
    stored[6:10, 6:10, 1] = 1012  # HU 1000
    path = _save(tmp_path / "in" / "a.nii.gz", stored, zooms=(1.0, 1.0, 1.0), slope=2.0, inter=-1024.0,
                 dtype=np.int16)
    out = tmp_path / "v.h5"
    report = prepare_volumes(path, out, size=16, window="40,400", val_fraction=0, test_fraction=0, progress=False)
    assert report["slices_kept"] == 2 and report["files_used"] == 1
    with h5py.File(out, "r") as f:
        images = f["train/images"][:]
        assert f.attrs["source"] == "nifti"
    # window 40,400: -1024 HU -> 0, 40 HU -> 0.5, 1000 HU -> 1
    assert images[0][0, 0] == 0.0 and images[0][8, 8] == pytest.approx(0.5)
    assert images[1][8, 8] == pytest.approx(1.0) and images[1][3, 3] == pytest.approx(0.5)


def test_volume_not_in_hu_is_named_and_hu_offset_fixes_it(tmp_path):
    path = _save(tmp_path / "in" / "plus1024.nii", _body() + 1024.0)
    report = prepare_volumes(path, tmp_path / "a.h5", size=16, progress=False, allow_mixed_spacing=True)
    assert any("probably not in HU" in w for w in report["warnings"])
    report = prepare_volumes(path, tmp_path / "b.h5", size=16, hu_offset=-1024, progress=False)
    assert report["warnings"] == {}
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert float(f["train/images"][0].min()) == pytest.approx(24 / 4095, abs=1e-6)  # -1000 HU, full window


def test_patients_from_file_names_pseudonymised_and_kept_together(tmp_path):
    root = tmp_path / "in"
    for p in range(4):
        for visit in (1, 2):
            _save(root / f"sub-{p:02d}_visit{visit}.nii.gz", _body(seed=10 * p + visit))
    (root / "notes.txt").write_text("sub-00 is DOE^JANE")  # not NIfTI: ignored in a folder
    (root / "sub-99_visit1.nii").write_bytes(b"not a nifti file at all" * 20)
    salt = tmp_path / "salt"
    salt.write_text("0123456789abcdef0123456789abcdef")
    out = tmp_path / "v.h5"
    report = prepare_volumes(root, out, size=16, patient_pattern=r"(sub-\d+)_", val_fraction=0.25,
                             test_fraction=0.25, salt_file=salt, progress=False)
    assert {s["reason"] for s in report["skipped"]} == {"not-nifti"}
    assert report["files_used"] == 8 and report["slices_kept"] == 8 * 4
    keys = {}
    with h5py.File(out, "r") as f:
        for split in ("train", "val", "test"):
            keys[split] = set(f[split]["patient"][:].astype(str))
        raw = out.read_bytes()
    assert [len(keys[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    assert pseudonym(b"0123456789abcdef0123456789abcdef", "patient", "nifti:sub-00") in set().union(*keys.values())
    assert b"sub-0" not in raw and b"visit" not in raw and b".nii" not in raw
    used = json.loads((tmp_path / "v.log.json").read_text())["used"]
    split_of = {u["path"].rsplit("/", 1)[1]: u["split"] for u in used}
    for p in range(4):  # both visits of a patient in one split
        assert split_of[f"sub-{p:02d}_visit1.nii.gz"] == split_of[f"sub-{p:02d}_visit2.nii.gz"]


def test_mixed_pixel_sizes_warn_then_refuse(tmp_path):
    root = tmp_path / "in"
    _save(root / "a.nii.gz", _body(), zooms=(1.0, 1.0, 2.0))
    _save(root / "b.nii.gz", _body(seed=1), zooms=(1.2, 1.2, 2.0))
    _save(root / "c.nii.gz", _body(seed=2), zooms=(1.0, 1.0, 2.0))
    report = prepare_volumes(root, tmp_path / "warn.h5", size=16, progress=False)
    assert "pixel sizes differ" in report["qc"]["spacing_warning"] and "b.nii.gz" in report["qc"]["spacing_warning"]
    assert report["qc"]["pixel_spacing"]["counts"] == {"1.20": 4, "1.00": 8}
    _save(root / "d.nii.gz", _body(seed=3), zooms=(3.0, 3.0, 2.0))
    with pytest.raises(CtrobustError, match=r"ratio of 3 .*d\.nii\.gz.*--fov MM.*--allow-mixed-spacing"):
        prepare_volumes(root, tmp_path / "refused.h5", size=16, progress=False)
    assert not (tmp_path / "refused.h5").exists()
    report = prepare_volumes(root, tmp_path / "fov.h5", size=16, fov=40.0, progress=False)  # one pixel size
    assert report["qc"]["spacing_warning"] is None and report["qc"]["pixel_spacing"]["counts"] == {"2.50": 16}


def test_constant_and_saturated_slices_are_flagged_skipped_and_listed(tmp_path):
    hu = _body(k=4)
    hu[..., 1] = -2000.0  # constant, below the window
    hu[..., 2] = 3000.0  # saturated at the maximum, but for 2 pixels (< 1 %)
    hu[0, :2, 2] = 0.0
    path = _save(tmp_path / "in" / "v.nii.gz", hu)
    report = prepare_volumes(path, tmp_path / "a.h5", size=16, window="abdomen", progress=False)
    flags = {(s["frame"], s["reason"]) for s in report["qc"]["flagged_slices"]}
    assert flags == {(1, "constant"), (2, "saturated")}
    assert report["slices_kept"] == 2
    detail = {s["frame"]: s["detail"] for s in report["qc"]["flagged_slices"]}
    assert "-160 HU" in detail[1] and "99.2 % at its maximum" in detail[2]
    report = prepare_volumes(path, tmp_path / "b.h5", size=16, window="abdomen", keep_flagged=True, progress=False)
    assert report["slices_kept"] == 4 and all(s["kept"] for s in report["qc"]["flagged_slices"])
    # a volume of nothing but flagged slices is a skipped file with that reason
    empty = _save(tmp_path / "in2" / "air.nii", np.full((16, 16, 2), -1024.0))
    with pytest.raises(CtrobustError, match="no slice found.*1 constant"):
        prepare_volumes(empty, tmp_path / "c.h5", size=16, window="abdomen", progress=False)


def test_nifti_round_trips_into_train_and_an_empty_val_split_is_announced(tmp_path, capsys):
    root = tmp_path / "in"
    for p in range(2):  # two patients: both in train, val and test empty (the docs' 2-patient case)
        _save(root / f"p{p}.nii.gz", _body(k=3, seed=p), zooms=(1.0, 1.0, 2.0))
    out = tmp_path / "two.h5"
    assert main(["prepare-volumes", str(root), "--out", str(out), "--size", "16", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "note: the val split is empty (2 patient(s)" in text and "QC page" in text
    assert (tmp_path / "two.qc" / "qc.md").is_file() and (tmp_path / "two.qc" / "thumbs_train.png").is_file()
    assert len(open_dataset(out, "train")) == 6
    rc = main(["train", "--data", str(out), "--angles", "8", "--max-steps", "2", "--batch-size", "2",
               "--channels", "2", "--depth", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0
    assert "val split of" in captured.err and "WITHOUT validation" in captured.err
    summary = json.loads(captured.out[captured.out.index("{"):])
    assert summary["best"]["criterion"] == "train_loss" and "val_mse" not in summary["best"]
    assert summary["best"]["train_loss"] > 0 and "val_mse" not in summary["metrics"]


def test_write_slices_splits_by_patient(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((12, 8, 8))
    patients = [f"case{i // 3}" for i in range(12)]  # 4 patients x 3 slices
    result = write_slices(images, tmp_path / "a.h5", patients=patients, val_fraction=0.25, test_fraction=0.25,
                          positions=np.arange(12.0), pixel_spacing=np.full(12, 0.7))
    assert {s: v["patients"] for s, v in result["splits"].items()} == {"train": 2, "val": 1, "test": 1}
    seen = []
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert f.attrs["format"] == "ctrobust-slices" and f.attrs["source"] == "arrays"
        for split in ("train", "val", "test"):
            g = f[split]
            for i in range(g["images"].shape[0]):
                k = int(g["position"][i])
                np.testing.assert_allclose(g["images"][i], images[k], rtol=1e-6)  # float32
                seen.append((split, patients[k], g["patient"][i]))
        assert b"case" not in (tmp_path / "a.h5").read_bytes()
    assert sorted(int(s[1][4:]) for s in seen) == sorted(i // 3 for i in range(12))
    by_patient = {}
    for split, patient, key in seen:
        by_patient.setdefault(patient, set()).add((split, key))
    assert all(len(v) == 1 for v in by_patient.values())  # one split and one pseudonym per patient
    with pytest.raises(CtrobustError, match=r"images\[0\] has values from 0.0\d+ to 1.99\d+, outside \[0, 1\]"):
        write_slices(images * 2, tmp_path / "b.h5", patients=patients)
    with pytest.raises(CtrobustError, match="patients has 3 entries for 12 images"):
        write_slices(images, tmp_path / "c.h5", patients=patients[:3])
    with pytest.raises(CtrobustError, match="already exists"):
        write_slices(images, tmp_path / "a.h5", patients=patients)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_slices(images, tmp_path / "d.h5")
    assert any("every slice is its own patient" in str(w.message) for w in caught)


def test_read_volume_same_slices_from_any_voxel_order_and_bad_files(tmp_path):
    from ctrobust.data.volumes import read_volume

    hu = _body(n=16, k=5, seed=4)
    hu[12, 13, :] = 900.0  # a bright marker: right, anterior
    a = _save(tmp_path / "ras.nii.gz", hu, zooms=(1.0, 1.0, 2.0))
    # stored superior-axis first and flipped, with the affine saying so (read the slow, whole-volume way)
    stored = np.flip(hu.transpose(2, 0, 1), axis=0).copy()
    to_ras = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [-1, 0, 0, 4], [0, 0, 0, 1]], dtype=float)
    b = tmp_path / "zfirst.nii.gz"
    nib.save(nib.Nifti1Image(stored.astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0]) @ to_ras), str(b))
    # and as LPS (both in-plane axes reversed, as DICOM-derived NIfTI often are)
    c = tmp_path / "lps.nii"
    lps = np.diag([-1.0, -1.0, 2.0, 1.0])
    lps[:2, 3] = 15.0
    nib.save(nib.Nifti1Image(np.flip(hu, axis=(0, 1)).astype(np.float32).copy(), lps), str(c))
    results = [read_volume(str(p), (40.0, 400.0), 16) for p in (a, b, c)]
    frames = [sorted(r.frames, key=lambda fr: fr.position) for r in results]
    for other in frames[1:]:
        assert [fr.position for fr in other] == [fr.position for fr in frames[0]]
        for f0, f1 in zip(frames[0], other):
            np.testing.assert_array_equal(f0.image, f1.image)
    # the marker (right, anterior) is near the top left of every displayed slice
    assert all(np.unravel_index(np.argmax(fr.image), fr.image.shape) == (2, 3) for fr in frames[0])
    whole = a.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "fake.nii").write_bytes(b"\0" * 400)
    four_d = tmp_path / "series.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.float32), np.eye(4)), str(four_d))
    for name, reason in (("cut.nii.gz", "unreadable"), ("fake.nii", "not-nifti"), ("series.nii", "bad-header")):
        res = read_volume(str(tmp_path / name), (40.0, 400.0), 16)
        assert res.skip == reason and not res.frames, (name, res.skip, res.detail)
