"""``run_prepare_dicom``, ``run_prepare_volumes`` and ``run_make_phantoms``: the data commands
(``ctrobust prepare-dicom``, ``prepare-volumes``, ``make-phantoms``), layers over
:func:`ctrobust.data.prepare.prepare_dicom`, :func:`ctrobust.data.volumes.prepare_volumes` and
:func:`ctrobust.data.make.make_phantoms`; each writes one prepared-slice HDF5 file atomically."""

from __future__ import annotations

from ctrobust.app.specs import MakePhantomsSpec, PrepareDicomSpec, PrepareVolumesSpec
from ctrobust.errors import CtrobustError

__all__ = ["run_prepare_dicom", "run_prepare_volumes", "run_make_phantoms"]


def run_prepare_dicom(spec: PrepareDicomSpec) -> dict:
    """DICOM files and folders -> a de-identified prepared-slice file; returns the library's report dict
    (counts, skipped files by reason, ``log``: the JSON log beside the output)."""
    from ctrobust.data.prepare import prepare_dicom

    return prepare_dicom(list(spec.inputs), spec.out, size=spec.size, window=spec.window,
                         val_fraction=spec.val_fraction, test_fraction=spec.test_fraction, seed=spec.seed,
                         fov=spec.fov, workers=spec.workers, salt_file=spec.salt_file,
                         keep_flagged=spec.keep_flagged, max_clipped=spec.max_clipped,
                         allow_mixed_spacing=spec.allow_mixed_spacing, qc_page=spec.qc_page, force=spec.force,
                         progress=None if spec.progress else False)


def run_prepare_volumes(spec: PrepareVolumesSpec) -> dict:
    """NIfTI volumes -> a de-identified prepared-slice file; returns the report dict (as
    :func:`run_prepare_dicom`)."""
    from ctrobust.data.volumes import prepare_volumes

    return prepare_volumes(list(spec.inputs), spec.out, size=spec.size, window=spec.window,
                           val_fraction=spec.val_fraction, test_fraction=spec.test_fraction, seed=spec.seed,
                           fov=spec.fov, hu_offset=spec.hu_offset, patient_pattern=spec.patient_pattern,
                           workers=spec.workers, salt_file=spec.salt_file, keep_flagged=spec.keep_flagged,
                           max_clipped=spec.max_clipped, allow_mixed_spacing=spec.allow_mixed_spacing,
                           qc_page=spec.qc_page, force=spec.force, progress=None if spec.progress else False)


def run_make_phantoms(spec: MakePhantomsSpec) -> dict:
    """Random-ellipse phantoms (and Shepp-Logan) as a prepared-slice file; returns ``{"out", "counts", ...}``."""
    from ctrobust.data.make import make_phantoms

    try:
        return make_phantoms(spec.out, n=spec.n, size=spec.size, seed=spec.seed, val_fraction=spec.val_fraction,
                             test_fraction=spec.test_fraction, shepp_logan=spec.shepp_logan, force=spec.force,
                             progress=None if spec.progress else False)
    except ValueError as exc:
        raise CtrobustError(str(exc)) from None
