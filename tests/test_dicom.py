"""DICOM reading and prepare-dicom: slices kept, HU values, patient split, de-identification, atomicity."""

import json
import math

import h5py
import numpy as np
import pytest
from pydicom.uid import generate_uid
from skimage.transform import resize

from ctrobust.data import dicom as dcm
from ctrobust.data.prepare import log_path_for, prepare_dicom, pseudonym, split_patients
from ctrobust.data.store import open_dataset
from ctrobust.errors import CtrobustError

from dicom_factory import copy_testdata, write_ct, write_enhanced_ct, write_mr, write_truncated

N = 32
FULL = dcm.WINDOWS["full"]


def ramp(offset=0, n=N):
    """Stored values with a known pattern: 0..n*n-1 scaled, plus offset (int16)."""
    return (np.arange(n * n).reshape(n, n) * 3 + offset).astype(np.int16)


def full_window(hu):
    return np.clip((np.asarray(hu, dtype=np.float64) + 1024.0) / 4095.0, 0, 1)


# ---------------------------------------------------------------------------------------- windows / resampling

def test_parse_window_presets_and_level_width():
    assert dcm.parse_window("abdomen") == ("abdomen", 40.0, 400.0)
    assert dcm.parse_window("LUNG")[1:] == (-600.0, 1500.0)
    assert dcm.parse_window("-500,1400") == ("-500,1400", -500.0, 1400.0)
    for bad in ("soft", "40", "40,0", "40,-3", "a,b"):
        with pytest.raises(ValueError, match="window"):
            dcm.parse_window(bad)


def test_apply_window_maps_edges_to_0_and_1():
    out = dcm.apply_window(np.array([-200.0, -160.0, 40.0, 240.0, 1000.0]), 40, 400)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert out.dtype == np.float32


def test_resample_non_square_pixels_keeps_physical_shape():
    # 32 rows x 64 cols with 2 mm x 1 mm pixels = a 64 x 64 mm square: no padding, left/right halves kept
    hu = np.full((32, 64), -1000.0)
    hu[:, 32:] = 1000.0
    out, step = dcm.resample_slice(hu, (2.0, 1.0), 32)
    assert step == pytest.approx(2.0)
    assert out.shape == (32, 32)
    np.testing.assert_allclose(out[:, :15], -1000.0)
    np.testing.assert_allclose(out[:, 17:], 1000.0)


def test_resample_pads_smaller_field_of_view_with_air():
    hu = np.full((16, 16), 100.0)
    out, step = dcm.resample_slice(hu, (1.0, 1.0), 32, fov=32.0)
    assert step == pytest.approx(1.0)
    np.testing.assert_allclose(out[8:24, 8:24], 100.0)
    out[8:24, 8:24] = dcm.AIR_HU
    np.testing.assert_allclose(out, dcm.AIR_HU)
    # a field of view smaller than the slice crops its centre
    hu = np.arange(64.0).reshape(8, 8)
    out, _ = dcm.resample_slice(hu, (1.0, 1.0), 4, fov=4.0)
    np.testing.assert_allclose(out, hu[2:6, 2:6])


def test_resample_anti_aliases_fine_patterns():
    checker = (np.indices((64, 64)).sum(0) % 2) * 1000.0  # 1-pixel checkerboard
    out, _ = dcm.resample_slice(checker, (1.0, 1.0), 16)
    assert abs(out[4:-4, 4:-4].mean() - 500.0) < 5.0
    assert out[4:-4, 4:-4].std() < 50.0  # plain subsampling would give 0 / 1000 (std 500)


# ---------------------------------------------------------------------------------------- one file

def test_read_ct_hu_values_exact(tmp_path):
    stored = ramp(-50)
    write_ct(tmp_path / "a", stored, slope=2.0, intercept=-1000.0)
    res = dcm.read_ct_file(str(tmp_path / "a"), FULL, N)
    assert res.skip is None and len(res.frames) == 1
    expected = full_window(stored.astype(np.float64) * 2.0 - 1000.0)
    np.testing.assert_allclose(res.frames[0].image, expected, atol=1e-6)
    assert res.frames[0].pixel_spacing == pytest.approx(1.0)


def test_read_ct_pixel_padding_becomes_air(tmp_path):
    stored = np.full((N, N), 1024, dtype=np.int16)
    stored[:4] = -2000
    write_ct(tmp_path / "p", stored, slope=1.0, intercept=-1024.0, padding=-2000)
    res = dcm.read_ct_file(str(tmp_path / "p"), (40.0, 400.0), N)
    img = res.frames[0].image
    np.testing.assert_allclose(img[:4], 0.0)
    np.testing.assert_allclose(img[4:], 0.4, atol=1e-6)  # 0 HU in the 40/400 window: (0 + 160) / 400


def test_rle_compressed_equals_uncompressed(tmp_path):
    stored = ramp(-300)
    write_ct(tmp_path / "plain", stored)
    write_ct(tmp_path / "rle", stored, rle=True)
    a = dcm.read_ct_file(str(tmp_path / "plain"), (40.0, 400.0), N)
    b = dcm.read_ct_file(str(tmp_path / "rle"), (40.0, 400.0), N)
    assert b.skip is None, b.detail
    np.testing.assert_array_equal(a.frames[0].image, b.frames[0].image)


def test_jpeg2000_real_slice_decodes(tmp_path):
    """pydicom's 693_J2KI.dcm (JPEG 2000, 512 px, 0.4785 mm) through pylibjpeg-openjpeg, resized with skimage."""
    import pydicom

    path = copy_testdata("693_J2KI.dcm", tmp_path / "j2k")
    res = dcm.read_ct_file(str(path), FULL, 64)
    assert res.skip is None, res.detail
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    hu[ds.pixel_array == ds.PixelPaddingValue] = dcm.AIR_HU
    ref = full_window(resize(hu, (64, 64), order=1, anti_aliasing=True, preserve_range=True, mode="edge"))
    np.testing.assert_allclose(res.frames[0].image, ref, atol=1e-5)
    assert res.frames[0].pixel_spacing == pytest.approx(512 * 0.478516 / 64, rel=1e-5)
    assert res.frames[0].position == pytest.approx(47.0)


def test_enhanced_ct_multiframe_split_with_per_frame_rescale(tmp_path):
    frames = np.stack([ramp(k * 100) for k in range(3)])
    write_enhanced_ct(tmp_path / "enh", frames, zs=[5.0, -5.0, 0.0], slopes=[1.0, 2.0, 0.5])
    res = dcm.read_ct_file(str(tmp_path / "enh"), FULL, N)
    assert res.skip is None, res.detail
    assert [f.frame_index for f in res.frames] == [0, 1, 2]
    assert [f.position for f in res.frames] == [5.0, -5.0, 0.0]
    for fr, slope, stored in zip(res.frames, [1.0, 2.0, 0.5], frames):
        np.testing.assert_allclose(fr.image, full_window(stored * slope - 1024.0), atol=1e-6)


@pytest.mark.parametrize("kind, reason", [
    ("mr", "not-ct"), ("text", "not-dicom"), ("empty", "not-dicom"), ("truncated-pixels", "truncated"),
    ("truncated-header", "truncated"), ("localizer", "localizer"), ("rtdose", "not-ct"),
])
def test_bad_files_are_skipped_with_reason(tmp_path, kind, reason):
    path = tmp_path / kind
    if kind == "mr":
        write_mr(path, ramp())
    elif kind == "text":
        path.write_text("patient list\nnot an image\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind.startswith("truncated"):
        write_ct(tmp_path / "src", ramp())
        write_truncated(path, tmp_path / "src", 0.7 if kind == "truncated-pixels" else 0.1)
    elif kind == "localizer":
        write_ct(path, ramp(), image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    elif kind == "rtdose":
        copy_testdata("rtdose.dcm", path)  # pydicom's RT Dose test file
    res = dcm.read_ct_file(str(path), FULL, N)
    assert res.skip == reason, (res.skip, res.detail)
    assert not res.frames and res.detail


def _cut_file(tmp_path, name, cut):
    """A CT written by the factory, cut ``cut`` bytes into the value of element ``name`` (or its header)."""
    import pydicom

    write_ct(tmp_path / "whole", ramp())
    raw = (tmp_path / "whole").read_bytes()
    ds = pydicom.dcmread(tmp_path / "whole")
    tag = ds.data_element(name).tag
    elem = pydicom.dcmread(tmp_path / "whole", stop_before_pixels=False).get_item(tag)
    path = tmp_path / f"cut-{name}-{cut}"
    path.write_bytes(raw[: elem.value_tell + cut])
    return path, elem


@pytest.mark.parametrize("name, where", [
    ("pydicom:UN_sequence.dcm", "unidentified"), ("pydicom:priv_SQ.dcm", "unidentified"),
    ("pydicom:MR_truncated.dcm", "truncated"),
    ("pydicom:dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000000", "no-pixels"),
    ("cut:PatientName:3", "truncated"), ("cut:PatientName:-3", "truncated"), ("cut:PixelData:100", "truncated"),
])
def test_every_skip_has_its_true_reason(tmp_path, name, where):
    """Intact files without Modality/SOP class are not called truncated; cut files are, wherever the cut."""
    kind, rest = name.split(":", 1)
    if kind == "pydicom":
        path = copy_testdata(rest, tmp_path / rest.replace("/", "_"))
    else:
        element, cut = rest.split(":")
        path, elem = _cut_file(tmp_path, element, int(cut))
    res = dcm.read_ct_file(str(path), FULL, N)
    assert res.skip == where, (res.skip, res.detail)
    if where == "truncated" and kind == "cut":
        expected = "inside the header of the element after" if int(cut) < 0 else f"inside element ({elem.tag.group:04X}"
        assert expected in res.detail, res.detail
    if where == "unidentified":
        assert "complete file" in res.detail and "truncat" not in res.detail


def test_truncation_finds_nothing_in_intact_files():
    import pydicom
    from pydicom.data import get_testdata_file

    for name in ("CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "UN_sequence.dcm", "693_J2KI.dcm"):
        path = get_testdata_file(name)
        ds = pydicom.dcmread(path)
        import os

        assert dcm.truncation(ds, os.path.getsize(path)) is None, name


def _series(root, patient, spacing, n=3, stored=None, **kw):
    for k in range(n):
        write_ct(root / patient / f"{k}.dcm", ramp(10 * k) if stored is None else stored[k], patient_id=patient,
                 spacing=spacing, z=float(k), **kw)


def test_mixed_pixel_spacing_warns_names_files_and_refuses_above_the_bound(tmp_path):
    root = tmp_path / "in"
    _series(root, "A", (1.0, 1.0))
    _series(root, "B", (1.25, 1.25))
    report = prepare_dicom(root, tmp_path / "a.h5", size=N, progress=False)
    warning = report["qc"]["spacing_warning"]
    assert "1 to 1.25 mm, a ratio of 1.25" in warning and "B/0.dcm" in warning and "--fov MM" in warning
    assert report["qc"]["pixel_spacing"]["counts"] == {"1.25": 3, "1.00": 3}
    _series(root, "C", (2.5, 2.5))
    with pytest.raises(CtrobustError, match="ratio of 2.5"):
        prepare_dicom(root, tmp_path / "b.h5", size=N, progress=False)
    assert not (tmp_path / "b.h5").exists() and log_path_for(tmp_path / "b.h5").exists()
    report = prepare_dicom(root, tmp_path / "c.h5", size=N, progress=False, allow_mixed_spacing=True)
    assert report["qc"]["pixel_spacing"]["max"] == pytest.approx(2.5)
    # one field of view: one pixel size, no warning
    report = prepare_dicom(root, tmp_path / "d.h5", size=N, fov=40.0, progress=False)
    assert report["qc"]["spacing_warning"] is None and list(report["qc"]["pixel_spacing"]["counts"]) == ["1.25"]


def test_saturated_and_constant_dicom_slices_are_flagged(tmp_path):
    root = tmp_path / "in"
    normal = ramp()
    saturated = np.full((N, N), 4000, np.int16)  # 2976 HU: above the abdomen window
    saturated[0, :5] = 1024  # 0 HU: 5 of 1024 pixels inside the window
    constant = np.zeros((N, N), np.int16)  # -1024 HU everywhere
    _series(root, "P", (1.0, 1.0), stored=[normal + 1000, saturated, constant])
    report = prepare_dicom(root, tmp_path / "a.h5", size=N, window="abdomen", progress=False)
    reasons = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in report["skipped"]}
    assert reasons == {"1.dcm": "saturated", "2.dcm": "constant"}
    assert report["slices_kept"] == 1 and report["used"][0]["path"].endswith("P/0.dcm")
    assert {s["reason"] for s in report["qc"]["flagged_slices"]} == {"saturated", "constant"}
    report = prepare_dicom(root, tmp_path / "b.h5", size=N, window="abdomen", keep_flagged=True, progress=False)
    assert report["slices_kept"] == 3 and len(report["qc"]["flagged_slices"]) == 2


def test_flag_slice_thresholds():
    from ctrobust.data.qc import flag_slice

    image = np.full((10, 10), 0.5)
    assert flag_slice(image)[0] == "constant"
    image[0, 0] = 0.6
    assert flag_slice(image) == (None, "")
    image = np.zeros((10, 10))
    image[0, :2] = 0.5  # 98 % clipped: kept at the default 0.99, flagged at 0.95
    assert flag_slice(image)[0] is None and flag_slice(image, max_clipped=0.95)[0] == "saturated"
    image[0, 1] = 1.0  # 99 % at a bound (98 % minimum, 1 % maximum)
    reason, detail = flag_slice(image, window=(40.0, 400.0))
    assert reason == "saturated" and "98.0 % of pixels at the window's minimum and 1.0 % at its maximum" in detail
    assert "(-160 / 240 HU)" in detail


# ---------------------------------------------------------------------------------------- the pipeline



@pytest.fixture
def clinic(tmp_path):
    """A messy clinical folder: 5 CT patients (one RLE, one multi-frame, one real slice), MR, broken files."""
    root = tmp_path / "incoming"
    ids = []
    expected = {}  # patient id -> list of (z, stored, slope, intercept)
    patients = [("PID-ALICE-0001", "SMITH^ALICE", "19450312", "ACC11111", "Alpha General Hospital"),
                ("PID-BOB-0002", "JONES^BOB", "19520704", "ACC22222", "Beta Clinic"),
                ("PID-CAROL-0003", "BROWN^CAROL", "19601231", "ACC33333", "Gamma Medical Centre"),
                ("PID-DAVE-0004", "WHITE^DAVE", "19700101", "ACC44444", "Delta Infirmary")]
    for p, (pid, name, birth, acc, inst) in enumerate(patients):
        study = generate_uid()
        ids += [pid, name.split("^")[0], name.split("^")[1], birth, acc, inst, study]
        n_series = 2 if p == 0 else 1
        for s in range(n_series):
            series = generate_uid()
            ids.append(series)
            zs = [12.5, -2.5, 5.0]  # written out of order; instance numbers disagree on purpose
            for k, z in enumerate(zs):
                stored = ramp(100 * p + 10 * k)
                sop = generate_uid()
                ids.append(sop)
                write_ct(root / f"dir{p}" / f"s{s}" / f"img{k}.dcm" if p != 1 else root / f"dir{p}" / f"IM{k:04d}",
                         stored, patient_id=pid, patient_name=name, birth_date=birth, accession=acc,
                         institution=inst, study_uid=study, series_uid=series, sop_uid=sop, z=z, instance=3 - k,
                         rle=(p == 1), intercept=-1024.0 - p)
                expected.setdefault(pid, []).append((series, z, stored, -1024.0 - p))
    # patient 5: one Enhanced CT file with 3 frames
    frames = np.stack([ramp(7 * k + 5) for k in range(3)])
    enh_ids = dict(patient_id="PID-ERIN-0005", patient_name="GREEN^ERIN", birth_date="19800808",
                   accession="ACC55555", institution="Epsilon Hospital", study_uid=generate_uid(),
                   series_uid=generate_uid())
    write_enhanced_ct(root / "dir4" / "volume.bin", frames, zs=[3.0, 1.0, 2.0], **enh_ids)
    ids += [v for v in enh_ids.values()] + ["GREEN", "ERIN"]
    # real data: pydicom's CT_small.dcm (patient 1CT1, 128 px) as a sixth patient
    copy_testdata("CT_small.dcm", root / "real" / "ct_small")
    ids += ["1CT1", "CompressedSamples", "JFK IMAGING CENTER", "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"]
    # things to skip
    write_mr(root / "dir2" / "mr.dcm", ramp(), patient_id="PID-CAROL-0003")
    (root / "dir3" / "notes.txt").write_text("Patient WHITE^DAVE, see attached")
    write_truncated(root / "dir3" / "broken.dcm", root / "dir3" / "s0" / "img0.dcm", 0.6)
    write_ct(root / "dir0" / "scout", ramp(), patient_id="PID-ALICE-0001",
             image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    import shutil

    shutil.copy(root / "dir0" / "s0" / "img0.dcm", root / "dir0" / "copy_of_img0")
    bad = {"dir2/mr.dcm": "not-ct", "dir3/notes.txt": "not-dicom", "dir3/broken.dcm": "truncated",
           "dir0/scout": "localizer"}
    bad["dir0/s0/img0.dcm"] = "duplicate"  # os.walk reads a folder's files (copy_of_img0) before subfolders
    return {"root": root, "ids": ids, "expected": expected, "bad": bad}


def _read_all(path):
    with h5py.File(path, "r") as f:
        return {s: {k: f[s][k][:] for k in f[s]} for s in ("train", "val", "test")}, dict(f.attrs)


def test_prepare_keeps_right_slices_and_reports_skips(clinic, tmp_path):
    out = tmp_path / "ct.h5"
    report = prepare_dicom([clinic["root"]], out, allow_mixed_spacing=True, size=N, window="full", val_fraction=0.2, test_fraction=0.2,
                           seed=3, progress=False)
    # 4 patients x series x 3 slices (patient 0 has 2 series) + 3 frames + 1 real slice
    assert report["slices_kept"] == (2 + 1 + 1 + 1) * 3 + 3 + 1
    skipped = {s["path"]: s["reason"] for s in report["skipped"]}
    expected_skips = {str(clinic["root"] / k): v for k, v in clinic["bad"].items()}
    assert skipped == expected_skips
    assert report["files_found"] == report["files_used"] + len(expected_skips)
    log = json.loads(log_path_for(out).read_text())
    assert {s["path"]: s["reason"] for s in log["skipped"]} == expected_skips

    data, attrs = _read_all(out)
    assert attrs["format"] == "ctrobust-slices" and attrs["window"] == "full" and attrs["image_size"] == N
    total = sum(len(d["images"]) for d in data.values())
    assert total == report["slices_kept"]
    # no patient in two splits; counts: 6 patients -> 1 val, 1 test
    per_split = {s: set(d["patient"].tolist()) for s, d in data.items()}
    assert not (per_split["train"] & per_split["val"]) and not (per_split["train"] & per_split["test"])
    assert not (per_split["val"] & per_split["test"])
    assert [len(per_split[s]) for s in ("train", "val", "test")] == [4, 1, 1]

    # HU values right and slices ordered by position within each series, whatever the file order
    found = 0
    for d in data.values():
        for i in range(len(d["images"])):
            if d["pixel_spacing"][i] != pytest.approx(1.0):
                continue
            matches = [(z, stored, icpt) for ser in clinic["expected"].values() for (_, z, stored, icpt) in ser
                       if np.allclose(d["images"][i], full_window(stored - 0 + icpt), atol=1e-6)]
            if matches:
                found += 1
                assert d["position"][i] == pytest.approx(matches[0][0])
        for key in np.unique(d["series"]):
            pos = d["position"][d["series"] == key]
            assert np.all(np.diff(pos) > 0), pos
    assert found == 15


def test_no_identifier_in_output_bytes(clinic, tmp_path):
    out = tmp_path / "share" / "ct.h5"
    out.parent.mkdir()
    prepare_dicom([clinic["root"]], out, allow_mixed_spacing=True, size=N, progress=False)
    raw = out.read_bytes()
    for ident in clinic["ids"] + [str(clinic["root"]), "incoming", "dir0", "img0", "notes", "volume.bin",
                                  "ct_small", "19450312"]:
        assert ident.encode() not in raw, f"{ident!r} leaked into the HDF5 file"
        assert ident.upper().encode() not in raw
    # the log names input paths (kept private) but no DICOM identifiers
    log = log_path_for(out).read_text()
    for ident in clinic["ids"]:
        assert ident not in log, f"{ident!r} leaked into the log"
    # the QC page (text and PNG bytes) holds no identifier and no path or file name either
    qc = out.parent / "ct.qc"
    assert sorted(p.name for p in qc.iterdir()) == ["pixel_spacing.png", "qc.md", "thumbs_test.png",
                                                   "thumbs_train.png", "thumbs_val.png"]
    for page in qc.iterdir():
        raw = page.read_bytes()
        for ident in clinic["ids"] + [str(clinic["root"]), "incoming", "dir0", "img0", "volume.bin", "ct_small"]:
            assert ident.encode() not in raw, f"{ident!r} leaked into {page.name}"


def test_split_is_deterministic_and_pseudonyms_salted(clinic, tmp_path):
    kw = dict(size=N, val_fraction=0.2, test_fraction=0.2, seed=11, progress=False)
    prepare_dicom([clinic["root"]], tmp_path / "a.h5", allow_mixed_spacing=True, **kw)
    prepare_dicom([clinic["root"]], tmp_path / "b.h5", allow_mixed_spacing=True, **kw)
    a, _ = _read_all(tmp_path / "a.h5")
    b, _ = _read_all(tmp_path / "b.h5")
    for s in a:
        np.testing.assert_array_equal(a[s]["images"], b[s]["images"])
        np.testing.assert_array_equal(a[s]["position"], b[s]["position"])
    # fresh random salt each run: the pseudonyms differ
    assert not set(a["train"]["patient"].tolist()) & set(b["train"]["patient"].tolist())
    # a salt file makes them stable and equal to the documented HMAC
    salt = tmp_path / "salt.txt"
    salt.write_text("0123456789abcdef0123456789abcdef\n")
    prepare_dicom([clinic["root"]], tmp_path / "c.h5", allow_mixed_spacing=True, salt_file=salt, **kw)
    c, _ = _read_all(tmp_path / "c.h5")
    keys = set(np.concatenate([c[s]["patient"] for s in c]).astype(str))
    assert pseudonym(b"0123456789abcdef0123456789abcdef", "patient", "id:PID-ALICE-0001") in keys
    assert len(keys) == 6


def test_split_patients_properties():
    patients = [f"p{i}" for i in range(20)]
    a = split_patients(patients, 0.1, 0.2, seed=5)
    assert a == split_patients(list(reversed(patients)), 0.1, 0.2, seed=5)
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 14, "val": 2, "test": 4}
    assert a != split_patients(patients, 0.1, 0.2, seed=6)
    assert set(split_patients(["x", "y", "z"], 0.1, 0.1).values()) == {"train", "val", "test"}
    assert set(split_patients(["x"], 0.3, 0.3).values()) == {"train"}


def test_interrupted_run_leaves_no_output(clinic, tmp_path, monkeypatch):
    from ctrobust.data import store

    calls = {"n": 0}
    original = store.SliceWriter.append

    def explode(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(store.SliceWriter, "append", explode)
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    with pytest.raises(KeyboardInterrupt):
        prepare_dicom([clinic["root"]], out_dir / "ct.h5", allow_mixed_spacing=True, size=N, progress=False)
    assert calls["n"] == 2
    assert list(out_dir.iterdir()) == []  # no output, no temporary or scratch file left


def test_existing_output_needs_force(clinic, tmp_path):
    out = tmp_path / "ct.h5"
    out.write_bytes(b"precious")
    with pytest.raises(CtrobustError, match="already exists.*force=True"):
        prepare_dicom([clinic["root"]], out, allow_mixed_spacing=True, size=N, progress=False)
    assert out.read_bytes() == b"precious"
    prepare_dicom([clinic["root"]], out, allow_mixed_spacing=True, size=N, progress=False, force=True)
    assert len(open_dataset(out, "train")) > 0


def test_no_ct_slice_is_an_error_with_log(tmp_path):
    root = tmp_path / "in"
    write_mr(root / "a", ramp())
    (root / "b.txt").write_text("hello")
    with pytest.raises(CtrobustError, match=r"no CT image slice found in 2 file.*1 not-ct.*1 not-dicom"):
        prepare_dicom([root], tmp_path / "x.h5", size=N, progress=False)
    assert not (tmp_path / "x.h5").exists()
    assert len(json.loads((tmp_path / "x.log.json").read_text())["skipped"]) == 2


def test_worker_pool_gives_same_result(clinic, tmp_path):
    kw = dict(size=N, seed=1, progress=False)
    prepare_dicom([clinic["root"]], tmp_path / "one.h5", allow_mixed_spacing=True, workers=1, **kw)
    prepare_dicom([clinic["root"]], tmp_path / "two.h5", allow_mixed_spacing=True, workers=2, **kw)
    a, _ = _read_all(tmp_path / "one.h5")
    b, _ = _read_all(tmp_path / "two.h5")
    for s in a:
        np.testing.assert_array_equal(a[s]["images"], b[s]["images"])


def test_position_fallback_to_instance_number(tmp_path):
    root = tmp_path / "in"
    series, study = generate_uid(), generate_uid()
    for k, inst in enumerate([3, 1, 2]):
        write_ct(root / f"f{k}", ramp(10 * inst), instance=inst, series_uid=series, study_uid=study,
                 with_position=False)
    prepare_dicom([root], tmp_path / "o.h5", size=N, progress=False)
    ds = open_dataset(tmp_path / "o.h5", "train")
    assert all(math.isnan(p) for p in ds.positions)
    for i, inst in enumerate([1, 2, 3]):
        np.testing.assert_allclose(ds[i][0].numpy(), full_window(ramp(10 * inst) - 1024.0), atol=1e-6)


def test_exception_text_in_the_log_drops_quoted_header_values():
    text = dcm.exception_text(ValueError("Invalid value for VR PN: 'DOE^JANE' (tag \"PatientName\")"))
    assert text == "ValueError: Invalid value for VR PN: '...' (tag '...')"
    assert "DOE" not in text and len(dcm.exception_text(OSError("x" * 1000))) < 320


def test_output_qc_folder_inside_the_inputs_is_not_read_back(tmp_path):
    root = tmp_path / "in"
    _series(root, "A", (1.0, 1.0))
    first = prepare_dicom(root, root / "ct.h5", size=N, progress=False)
    assert (root / "ct.qc" / "qc.md").is_file() and first["files_found"] == 3
    with pytest.raises(CtrobustError, match="already exists"):
        prepare_dicom(root, root / "ct.h5", size=N, progress=False)
    (root / "ct.h5").unlink()
    with pytest.raises(CtrobustError, match="QC folder .*ct.qc already exists; pass --force"):
        prepare_dicom(root, root / "ct.h5", size=N, progress=False)
    again = prepare_dicom(root, root / "ct.h5", size=N, progress=False, force=True)
    assert again["files_found"] == 3 and not again["skipped"]
