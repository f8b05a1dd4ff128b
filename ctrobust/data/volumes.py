"""NIfTI CT volumes -> prepared slices (``ctrobust prepare-volumes``), and plain arrays -> prepared slices.

:func:`prepare_volumes` reads ``.nii`` / ``.nii.gz`` files with nibabel and goes through the same
pipeline as ``prepare-dicom`` (:func:`ctrobust.data.prepare.run_pipeline`: QC, patient split, salted
pseudonyms, atomic output, private JSON log, QC page).

Conventions
-----------
- **HU**: nibabel's scaled data (``get_fdata``: stored value x ``scl_slope`` + ``scl_inter`` when the
  header sets them), plus ``hu_offset``. CT volumes of public collections are normally stored in HU;
  a volume with no value below -500 (no air) is named in a warning, since it is probably not in HU
  (e.g. stored as HU + 1024: pass ``hu_offset=-1024``).
- **Axial slices**: the volume is reoriented to the closest canonical orientation (RAS+,
  ``nibabel.as_closest_canonical``: the affine decides which array axis runs inferior -> superior),
  then cut along that axis. Each slice is shown as DICOM shows an axial slice: rows run anterior ->
  posterior, columns the patient's right -> left. Its pixel size (mm) is the voxel size of the two
  in-plane axes, its position (mm) the superior coordinate of the slice centre from the affine. An
  oblique affine is rounded to the nearest axes (no interpolation between slices).
- **Resampling and window**: as prepare-dicom (:func:`ctrobust.data.dicom.resample_slice`,
  :func:`~ctrobust.data.dicom.apply_window`).
- **Patients**: each file is one patient, keyed by its path below the input folder without the
  extension (``P001/ct.nii.gz`` -> ``P001/ct``), unless ``patient_pattern`` (a regular expression
  searched in that path; its first group, else the whole match) names the patient, so that several
  volumes of one person stay in one split. Keys are pseudonymised with the salted HMAC; file names never
  reach the output.
"""

from __future__ import annotations

import functools
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ctrobust.data.dicom import FileResult, Frame, apply_window, exception_text, resample_slice
from ctrobust.data.qc import MAX_CLIPPED
from ctrobust.errors import CtrobustError

__all__ = ["NIFTI_SUFFIXES", "prepare_volumes", "read_volume", "axial_layout", "axial_slice", "axial_slices",
           "volume_key"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
WARN_NOT_HU = "no voxel below -500: the volume is probably not in HU (air is about -1000 HU); see --hu-offset"
_AIR_CHECK_HU = -500.0


def _is_nifti(path) -> bool:
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def _stem(rel: str) -> str:
    for suffix in (".nii.gz", ".nii"):
        if rel.lower().endswith(suffix):
            return rel[: -len(suffix)]
    return rel


def volume_key(rel_path: str, patient_pattern: str | None = None) -> str | None:
    """The patient key of a volume at ``rel_path`` (POSIX, below its input folder); None if the pattern
    does not match. Without a pattern: the path without ``.nii`` / ``.nii.gz``."""
    if not patient_pattern:
        return _stem(rel_path)
    match = re.search(patient_pattern, rel_path)
    if match is None:
        return None
    return match.group(1) if match.groups() and match.group(1) is not None else match.group(0)


def axial_layout(img) -> dict:
    """How to cut a nibabel image into axial slices without loading it whole.

    Returns ``{"axis", "flip", "transform", "n", "spacing", "positions"}``: the array axis that runs
    inferior -> superior in the closest canonical (RAS+) orientation, whether it runs backwards in the
    array, the nibabel orientation transform to RAS+, the number of slices, ``(row_spacing,
    col_spacing)`` in mm of the displayed slices and the slice positions (mm, superior coordinate of
    each slice centre, increasing). Raises ``ValueError`` for an image that is not 3-D.
    """
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    shape = tuple(int(n) for n in img.shape)
    if len(shape) < 3 or any(n < 1 for n in shape[:3]):
        raise ValueError(f"expected a 3-D volume, got shape {shape}")
    if any(n != 1 for n in shape[3:]):
        raise ValueError(f"expected a 3-D volume, got shape {shape} (a 4-D series: split it into volumes)")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError("the affine is singular or not finite: the voxel orientation is unknown")
    transform = ornt_transform(io_orientation(affine), axcodes2ornt("RAS"))
    axis = int(np.flatnonzero(transform[:, 0] == 2)[0])
    flip = bool(transform[axis, 1] < 0)
    canonical_affine = affine @ inv_ornt_aff(transform, shape[:3])
    zooms = np.sqrt((canonical_affine[:3, :3] ** 2).sum(axis=0))
    canonical_shape = [0, 0, 0]
    for ax in range(3):
        canonical_shape[int(transform[ax, 0])] = shape[ax]
    ci, cj = (canonical_shape[0] - 1) / 2.0, (canonical_shape[1] - 1) / 2.0
    n = shape[axis]
    positions = np.array([float((canonical_affine @ np.array([ci, cj, k, 1.0]))[2]) for k in range(n)])
    return {"axis": axis, "flip": flip, "transform": transform, "n": n,
            "spacing": (float(zooms[1]), float(zooms[0])), "positions": positions}


def axial_slice(img, layout: dict, k: int, data=None) -> np.ndarray:
    """Axial slice ``k`` (0 = most inferior) of a nibabel image: scaled values (nibabel applies
    ``scl_slope`` / ``scl_inter``), float64 ``(rows, cols)``, rows anterior -> posterior, columns the
    patient's right -> left (the DICOM display of an axial slice). Reads only that slice from disk, or
    takes it from ``data`` (the image's scaled array, when already loaded)."""
    from nibabel.orientations import apply_orientation

    index = layout["n"] - 1 - k if layout["flip"] else k
    slicer = [slice(None)] * len(img.shape)
    slicer[layout["axis"]] = slice(index, index + 1)
    source = img.dataobj if data is None else data
    slab = np.asarray(source[tuple(slicer)], dtype=np.float64)
    slab = slab.reshape(slab.shape[:3])
    canonical = apply_orientation(slab, layout["transform"])[:, :, 0]  # (R, A): axis 0 towards the Right
    # DICOM display: columns run to the patient's left (-x in RAS), rows to posterior (-y): flip both.
    return np.ascontiguousarray(np.flip(canonical, axis=(0, 1)).T)


def axial_slices(img) -> tuple[np.ndarray, tuple[float, float], np.ndarray]:
    """All axial slices of a nibabel image: ``(slices (S, rows, cols), (row_spacing, col_spacing) mm,
    positions mm)``; see :func:`axial_layout` and :func:`axial_slice`."""
    layout = axial_layout(img)
    slices = np.stack([axial_slice(img, layout, k) for k in range(layout["n"])])
    return slices, layout["spacing"], layout["positions"]


def read_volume(path: str, window: tuple[float, float], size: int, fov: float | None = None, *,
                key: str | None = None, hu_offset: float = 0.0) -> FileResult:
    """Read one NIfTI volume into windowed, resampled axial slices, or say why it is skipped.

    Never raises for a bad file: ``skip`` is ``unreadable`` (nibabel cannot read it), ``bad-header`` (not
    3-D, non-positive or non-finite voxel sizes, HU not finite) or ``not-nifti`` (no NIfTI content).
    ``key`` is the patient key (never written out: pseudonymised by the pipeline).
    """
    result = FileResult(path=str(path))
    try:
        import nibabel as nib

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                img = nib.load(path, keep_file_open=True)  # slices are read one by one
            except nib.filebasedimages.ImageFileError as exc:
                result.skip, result.detail = "not-nifti", exception_text(exc)
                return result
            except Exception as exc:  # noqa: BLE001 - gzip, EOF, header errors: never raise for a file
                result.skip, result.detail = "unreadable", exception_text(exc)
                return result
            try:
                layout = axial_layout(img)
            except ValueError as exc:
                result.skip, result.detail = "bad-header", str(exc)
                return result
            spacing, positions = layout["spacing"], layout["positions"]
            if not all(math.isfinite(v) and v > 0 for v in spacing):
                result.skip, result.detail = "bad-header", f"voxel sizes must be positive mm, got {list(spacing)}"
                return result
            if abs(spacing[0] - spacing[1]) > 1e-6 * max(spacing):
                result.warnings.append("non-square pixels resampled to square")
            level, width = window
            rel = key if key is not None else _stem(Path(path).name)
            lowest = math.inf
            data = None
            n = layout["n"]
            try:
                if layout["axis"] != 2:  # slices are not contiguous on disk: read the volume once
                    data = np.asarray(img.get_fdata(dtype=np.float32))
            except Exception as exc:  # noqa: BLE001 - truncated data, bad compression
                result.skip, result.detail = "unreadable", "cannot read the voxels: " + exception_text(exc)
                return result
            # in file order (a compressed file is read forwards once); the pipeline orders slices by position
            for k in (range(n - 1, -1, -1) if layout["flip"] else range(n)):
                try:
                    hu = axial_slice(img, layout, k, data) + float(hu_offset)
                except Exception as exc:  # noqa: BLE001 - truncated data, bad compression
                    result.frames, result.skip = [], "unreadable"
                    result.detail = f"cannot read the voxels of slice {k}: " + exception_text(exc)
                    return result
                if not np.isfinite(hu).all():
                    result.frames, result.skip = [], "bad-header"
                    result.detail = f"voxel values of slice {k} are not finite (NaN or infinite after scaling)"
                    return result
                lowest = min(lowest, float(hu.min()))
                out, step = resample_slice(hu, spacing, size, fov)
                result.frames.append(Frame(patient_id="nifti:" + rel, study_uid="", series_uid=str(path),
                                           sop_uid="", frame_index=k, position=float(positions[k]),
                                           instance_number=float(k), pixel_spacing=step,
                                           image=apply_window(out, level, width)))
            if lowest > _AIR_CHECK_HU:
                result.warnings.append(WARN_NOT_HU)
    except Exception as exc:  # noqa: BLE001 - documented: never raise for a bad file
        result.frames, result.skip = [], "unreadable"
        result.detail = exception_text(exc)
    return result


def _read_keyed(path: str, keys: dict, window, size, fov, hu_offset) -> FileResult:
    """Pool task: :func:`read_volume` with the file's patient key (or a skip when it has none)."""
    key = keys.get(path)
    if key is None:
        return FileResult(path=path, skip="no-patient-key", detail="the path does not match --patient-pattern")
    return read_volume(path, window, size, fov, key=key, hu_offset=hu_offset)


def prepare_volumes(inputs, out, *, size: int = 256, window="full", val_fraction: float = 0.1,
                    test_fraction: float = 0.1, seed: int = 0, fov: float | None = None,
                    hu_offset: float = 0.0, patient_pattern: str | None = None, workers: int = 1,
                    salt_file=None, keep_flagged: bool = False, max_clipped: float = MAX_CLIPPED,
                    allow_mixed_spacing: bool = False, qc_page: bool = True, force: bool = False,
                    progress: bool | None = None) -> dict:
    """NIfTI CT volumes (files or folders) -> a de-identified prepared-slice HDF5 file, log and QC page.

    Parameters
    ----------
    inputs : path-like or list of them
        ``.nii`` / ``.nii.gz`` files, and folders searched recursively for them (other files are ignored).
    hu_offset : float
        HU added to nibabel's scaled values (0 for volumes in HU; -1024 for volumes stored as HU + 1024).
    patient_pattern : str or None
        Regular expression searched in each file's path below its input folder; its first group (else the
        whole match) is the patient key. None: each file is its own patient.

    The other parameters, the return value and the errors are those of
    :func:`ctrobust.data.prepare.prepare_dicom`. Skip reasons: ``not-nifti``, ``unreadable``,
    ``bad-header``, ``no-patient-key``, ``constant``, ``saturated`` (see docs/cli/prepare-volumes.md).
    """
    from ctrobust.data.prepare import (check_options, check_outputs, collect_files, load_salt, new_report, outside,
                                       remove_stale_temporaries, run_pipeline)
    from ctrobust.data.qc import qc_dir_for

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise CtrobustError("no input given: pass NIfTI files (.nii, .nii.gz) or folders")
    window = check_options(size=size, window=window, val_fraction=val_fraction, test_fraction=test_fraction,
                           seed=seed, fov=fov, max_clipped=max_clipped)
    if not math.isfinite(float(hu_offset)):
        raise CtrobustError(f"hu_offset must be a finite number of HU, got {hu_offset}")
    if patient_pattern:
        try:
            re.compile(patient_pattern)
        except re.error as exc:
            raise CtrobustError(f"--patient-pattern {patient_pattern!r} is not a regular expression: {exc}") from None
    out, log_path, qc_dir = check_outputs(out, force, qc_page)
    salt = load_salt(salt_file)
    for stale in (out, log_path):
        remove_stale_temporaries(stale)
    problems: list = []
    keys: dict = {}
    files = []
    for item in inputs:
        found = outside(collect_files([item], exclude=(out, log_path), problems=problems), qc_dir_for(out))
        base = Path(item) if Path(item).is_dir() else Path(item).parent
        for f in found:
            if Path(item).is_dir() and not _is_nifti(f):
                continue  # folders may hold other files (JSON sidecars, masks in other formats)
            files.append(f)
            keys[str(f)] = volume_key(f.relative_to(base).as_posix(), patient_pattern)
    if not files:
        raise CtrobustError(f"no NIfTI file (.nii, .nii.gz) under {', '.join(map(str, inputs))}")
    report = new_report("ctrobust_prepare_volumes_log", inputs, files, problems, out, window, size=size,
                        val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, fov=fov,
                        salt_file=salt_file, keep_flagged=keep_flagged, max_clipped=max_clipped,
                        hu_offset=float(hu_offset), patient_pattern=patient_pattern)
    task = functools.partial(_read_keyed, keys=keys, window=window[1:], size=int(size), fov=fov,
                             hu_offset=float(hu_offset))
    return run_pipeline(files, task, report, out=out, log_path=log_path, qc_dir=qc_dir, salt=salt, window=window,
                        size=int(size), val_fraction=val_fraction, test_fraction=test_fraction, seed=int(seed),
                        fov=fov, workers=workers, force=force, progress=progress, keep_flagged=keep_flagged,
                        max_clipped=max_clipped, allow_mixed_spacing=allow_mixed_spacing, source="nifti",
                        command="prepare-volumes", desc="reading NIfTI")
