"""`ctrobust prepare-dicom`: DICOM folders -> a de-identified prepared-slice HDF5 file.

See docs/cli/prepare-dicom.md; the logic is :func:`ctrobust.data.prepare.prepare_dicom`.
"""

from __future__ import annotations

import argparse
import inspect

from ctrobust.cli.argtypes import image_size, nonneg_int, positive_float, positive_int
from ctrobust.errors import CtrobustError


def _defaults():
    from ctrobust.data.prepare import prepare_dicom

    return {k: v.default for k, v in inspect.signature(prepare_dicom).parameters.items()
            if v.default is not inspect.Parameter.empty}


def _window(text: str) -> str:
    from ctrobust.data.dicom import parse_window

    try:
        parse_window(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_parser(subparsers):
    from ctrobust.data.dicom import WINDOWS

    d = _defaults()
    presets = ", ".join(f"{k} ({lv:g},{w:g})" for k, (lv, w) in WINDOWS.items())
    p = subparsers.add_parser(
        "prepare-dicom",
        help="turn DICOM folders into de-identified CT training slices (HDF5)",
        description="Read every file under INPUT (recursively, any extension), keep CT image slices, convert "
                    "to HU, window to [0, 1], resample to SIZE x SIZE, split by patient and write one HDF5 file "
                    "with pseudonymous keys only, plus a JSON log (naming the input files) beside it. Files that "
                    "cannot be used (not DICOM, not CT, malformed headers, FIFOs, ...) and unreadable folders are "
                    "skipped and named in the log with their reason; the run goes on. Pixels are copied as they "
                    "are: text burned into the pixels is NOT removed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="DICOM files or folders (searched recursively)")
    p.add_argument("--out", required=True, metavar="DATASET.h5",
                   help="output HDF5 file (the log goes to DATASET.log.json)")
    p.add_argument("--size", type=image_size, default=d["size"],
                   help="output image side in pixels (square slices, at least 8)")
    p.add_argument("--window", type=_window, default=d["window"],
                   help=f"HU window mapped to [0, 1]: a preset, {presets}, or LEVEL,WIDTH in HU "
                        "(write --window=-600,1500 when LEVEL is negative)")
    p.add_argument("--fov", type=positive_float, default=d["fov"],
                   help="output field of view in mm, the same for every slice, centred; None: each slice's own "
                        "longer side")
    p.add_argument("--val-fraction", type=float, default=d["val_fraction"],
                   help="fraction of patients in the val split")
    p.add_argument("--test-fraction", type=float, default=d["test_fraction"],
                   help="fraction of patients in the test split")
    p.add_argument("--seed", type=nonneg_int, default=d["seed"],
                   help="seed of the patient split, >= 0 (deterministic for a seed)")
    p.add_argument("--salt-file", default=d["salt_file"], metavar="FILE",
                   help="secret file whose bytes salt the pseudonyms (stable keys across runs); None: a random "
                        "salt, never stored")
    p.add_argument("--workers", type=positive_int, default=d["workers"], help="processes reading DICOM files in parallel")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (hidden anyway when not a terminal)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ctrobust.data.prepare import format_summary, prepare_dicom

    if args.workers < 1:
        raise CtrobustError(f"--workers must be at least 1, got {args.workers}")
    report = prepare_dicom(
        args.inputs, args.out, size=args.size, window=args.window, val_fraction=args.val_fraction,
        test_fraction=args.test_fraction, seed=args.seed, fov=args.fov, workers=args.workers,
        salt_file=args.salt_file, force=args.force, progress=False if args.no_progress else None,
    )
    print(format_summary(report))
    print(f"\nwrote {args.out} (shareable: pseudonymous keys only; burned-in pixel text is not removed, check "
          f"the images before sharing) and {report['log']} (names input files: keep private)")
    return 0
