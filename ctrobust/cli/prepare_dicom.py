"""``ctrobust prepare-dicom``: the options are :class:`ctrobust.app.PrepareDicomSpec`, the work
:func:`ctrobust.app.run_prepare_dicom` (see docs/cli/prepare-dicom.md)."""

from __future__ import annotations

from ctrobust.app.specs import PrepareDicomSpec
from ctrobust.cli.adapter import add_spec_parser, spec_from_args


def add_parser(subparsers):
    return add_spec_parser(
        subparsers, "prepare-dicom", PrepareDicomSpec, run=run,
        help="turn DICOM folders into de-identified CT training slices (HDF5)",
        description="Read every file under INPUT (recursively, any extension), keep CT image slices, convert "
                    "to HU, window to [0, 1], resample to SIZE x SIZE, split by patient and write one HDF5 file "
                    "with pseudonymous keys only, plus a JSON log (naming the input files) beside it. Files that "
                    "cannot be used (not DICOM, not CT, malformed headers, FIFOs, ...) and unreadable folders are "
                    "skipped and named in the log with their reason; the run goes on. Pixels are copied as they "
                    "are: text burned into the pixels is NOT removed.")


def run(args) -> int:
    from ctrobust.app.data import run_prepare_dicom
    from ctrobust.data.prepare import format_summary

    spec = spec_from_args(PrepareDicomSpec, args)
    report = run_prepare_dicom(spec)
    print(format_summary(report))
    print(f"\nwrote {spec.out} (shareable: pseudonymous keys only; burned-in pixel text is not removed, check "
          f"the images before sharing) and {report['log']} (names input files: keep private)")
    return 0
