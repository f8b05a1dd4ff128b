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

from ctrobust.data.dicom import FileResult, Frame, apply_window, resample_slice
from ctrobust.data.qc import MAX_CLIPPED
from ctrobust.errors import CtrobustError

__all__ = ["NIFTI_SUFFIXES", "prepare_volumes", "read_volume", "axial_slices", "volume_key"]

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


def axial_slices(img) -> tuple[np.ndarray, tuple[float, float], np.ndarray]:
    """Axial slices of a nibabel image in HU-as-stored (scaled) values.

    Returns
    -------
    (slices, spacing, positions)
        float64 ``(S, rows, cols)`` with rows anterior -> posterior and columns right -> left (the DICOM
        display of an axial slice); ``(row_spacing, col_spacing)`` in mm; slice positions (mm, superior
        coordinate of each slice centre), increasing.
    """
    import nibabel as nib

    if len(img.shape) < 3 or any(n < 1 for n in img.shape[:3]):
        raise ValueError(f"expected a 3-D volume, got shape {img.shape}")
    extra = img.shape[3:]
    if any(n != 1 for n in extra):
        raise ValueError(f"expected a 3-D volume, got shape {img.shape} (a 4-D series: split it into volumes)")
    canonical = nib.as_closest_canonical(img)
    data = np.asarray(canonical.get_fdata(dtype=np.float64))
    data = data.reshape(data.shape[:3])
    zooms = [float(z) for z in canonical.header.get_zooms()[:3]]
    # RAS+: axis 0 runs towards the patient's Right, axis 1 Anterior, axis 2 Superior. The DICOM display of an
    # axial slice has columns running to the patient's left (-x) and rows to posterior (-y): flip both.
    slices = np.flip(data, axis=(0, 1)).transpose(2, 1, 0)  # (S, rows = -y, cols = -x)
    affine = canonical.affine
    ci, cj = (data.shape[0] - 1) / 2.0, (data.shape[1] - 1) / 2.0
    positions = np.array([float((affine @ np.array([ci, cj, k, 1.0]))[2]) for k in range(data.shape[2])])
    return slices, (zooms[1], zooms[0]), positions


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
                img = nib.load(path)
            except nib.filebasedimages.ImageFileError as exc:
                result.skip, result.detail = "not-nifti", f"{type(exc).__name__}: {exc}"
                return result
            except Exception as exc:  # noqa: BLE001 - gzip, EOF, header errors: never raise for a file
                result.skip, result.detail = "unreadable", f"{type(exc).__name__}: {exc}"
                return result
            try:
                slices, spacing, positions = axial_slices(img)
            except ValueError as exc:
                result.skip, result.detail = "bad-header", str(exc)
                return result
            except Exception as exc:  # noqa: BLE001 - truncated data, bad compression
                result.skip, result.detail = "unreadable", f"cannot read the voxels: {type(exc).__name__}: {exc}"
                return result
        if not all(math.isfinite(v) and v > 0 for v in spacing):
            result.skip, result.detail = "bad-header", f"voxel sizes must be positive mm, got {list(spacing)}"
            return result
        hu = slices + float(hu_offset)
        if not np.isfinite(hu).all():
            result.skip, result.detail = "bad-header", "voxel values are not finite (NaN or infinite after scaling)"
            return result
        if float(hu.min()) > _AIR_CHECK_HU:
            result.warnings.append(WARN_NOT_HU)
        if abs(spacing[0] - spacing[1]) > 1e-6 * max(spacing):
            result.warnings.append("non-square pixels resampled to square")
        level, width = window
        rel = key if key is not None else _stem(Path(path).name)
        for k in range(hu.shape[0]):
            out, step = resample_slice(hu[k], spacing, size, fov)
            result.frames.append(Frame(patient_id="nifti:" + rel, study_uid="", series_uid=str(path), sop_uid="",
                                       frame_index=k, position=float(positions[k]), instance_number=float(k),
                                       pixel_spacing=step, image=apply_window(out, level, width)))
    except Exception as exc:  # noqa: BLE001 - documented: never raise for a bad file
        result.frames, result.skip = [], "unreadable"
        result.detail = f"{type(exc).__name__}: {exc}"
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
    from ctrobust.data.prepare import (check_options, check_outputs, collect_files, load_salt, new_report,
                                       remove_stale_temporaries, run_pipeline)

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
        found = collect_files([item], exclude=(out, log_path), problems=problems)
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
