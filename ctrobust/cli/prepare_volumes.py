"""``ctrobust prepare-volumes``: the options are :class:`ctrobust.app.PrepareVolumesSpec`, the work
:func:`ctrobust.app.run_prepare_volumes` (see docs/cli/prepare-volumes.md)."""

from __future__ import annotations

from ctrobust.app.specs import PrepareVolumesSpec
from ctrobust.cli.adapter import add_spec_parser, spec_from_args


def add_parser(subparsers):
    return add_spec_parser(
        subparsers, "prepare-volumes", PrepareVolumesSpec, run=run,
        help="turn NIfTI CT volumes into de-identified CT training slices (HDF5)",
        description="Read every NIfTI volume (.nii, .nii.gz) under INPUT, take its values as HU (nibabel applies "
                    "scl_slope/scl_inter; --hu-offset adds a constant), cut axial slices along the axis the affine "
                    "names superior, window to [0, 1], resample to SIZE x SIZE, check each slice (constant or "
                    "saturated slices are skipped and listed, mixed pixel sizes warned or refused), split by "
                    "patient and write one HDF5 file with pseudonymous keys only, a JSON log (naming the input "
                    "files) and a QC page beside it.")


def run(args) -> int:
    from ctrobust.app.data import run_prepare_volumes
    from ctrobust.data.prepare import format_summary

    spec = spec_from_args(PrepareVolumesSpec, args)
    report = run_prepare_volumes(spec)
    print(format_summary(report))
    print(f"\nwrote {spec.out} (shareable: pseudonymous keys only; burned-in pixel text is not removed, check "
          f"the images before sharing) and {report['log']} (names input files: keep private)")
    return 0
