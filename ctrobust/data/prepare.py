"""DICOM folders -> one shareable prepared-slice HDF5 file (``ctrobust prepare-dicom``).

Pipeline: find every file under the inputs (any extension) -> read each in a process pool
(:func:`ctrobust.data.dicom.read_ct_file`: keep CT slices, decode, HU, window, resample) into a scratch
file -> group by patient / study / series, order slices by position -> split patients into
train / val / test (deterministic for a seed) -> replace identifiers by salted-hash pseudonyms -> write
the output atomically, and a JSON log (which names the input files, so it is *not* shareable) beside it.

De-identification: the output holds only pixels, pseudonyms (HMAC-SHA256 of the patient key or the
series UID under a secret salt, 64 bits in hex), slice positions and pixel sizes in mm, and the options
used. The salt is random per run (``secrets``), or read from ``salt_file`` to keep pseudonyms stable
across runs; it is never written anywhere. Patient names, IDs, dates, accession numbers, institutions,
UIDs, paths and file names never reach the HDF5 file. Pixels are copied as they are: text burned into
the pixels is not removed.

Bad input never stops a run: each file that cannot be used is skipped with its reason (see
:data:`ctrobust.data.dicom.SKIP_REASONS`; FIFOs and other non-regular files are never opened), a folder
that cannot be listed is named in the log and the summary, and only finite images in [0, 1] are written.
Files: the dataset gets the mode of an ordinary new file (``0o666`` less the umask: it is meant to be
shared); the log is owner-only (``0o600``: it names input paths). SIGTERM (under the command line) and
Ctrl-C remove the scratch and temporary files; those of a killed (SIGKILL) run are removed by the next
run writing the same output.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import os
import secrets
import signal
import stat
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from ctrobust.data.dicom import SKIP_REASONS, FileResult, exception_text, parse_window, read_ct_file
from ctrobust.data.make import split_counts
from ctrobust.data.qc import MAX_CLIPPED, qc_dir_for
from ctrobust.data.store import (SPLITS, SliceWriter, atomic_output, check_writable, new_temporary,
                                 remove_stale_temporaries)
from ctrobust.errors import CtrobustError

__all__ = ["prepare_dicom", "write_slices", "collect_files", "split_patients", "pseudonym", "load_salt",
           "log_path_for", "format_summary", "check_options", "check_outputs", "new_report", "run_pipeline"]

MIN_SALT_BYTES = 16


def log_path_for(out: str | os.PathLike) -> Path:
    """The JSON log written beside a dataset: ``DATASET.h5`` -> ``DATASET.log.json``."""
    out = Path(out)
    return out.with_name(out.stem + ".log.json") if out.suffix else out.with_name(out.name + ".log.json")


def collect_files(inputs, exclude=(), problems: list | None = None) -> list[Path]:
    """Every regular file under ``inputs`` (files or folders, recursive), sorted; ``exclude`` skipped.

    Links to regular files are followed; links to folders are not descended into. Entries that are not
    regular files (FIFOs, sockets, devices, broken links) are left out, and so are folders that cannot be
    listed; when ``problems`` is a list, each of them is appended to it as ``{"path", "reason", "detail"}``
    with reason ``"not-regular"`` or ``"unreadable-folder"``.
    """
    exclude = {Path(p).resolve() for p in exclude}
    problems = problems if problems is not None else []

    def regular(path: Path) -> bool:
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            problems.append({"path": str(path), "reason": "not-regular", "detail": f"{type(exc).__name__}: {exc}"})
            return False
        if not stat.S_ISREG(mode):
            kind = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "special file"
            problems.append({"path": str(path), "reason": "not-regular", "detail": f"a {kind}, not a regular file"})
            return False
        return True

    def unreadable(exc: OSError) -> None:
        problems.append({"path": str(exc.filename), "reason": "unreadable-folder",
                         "detail": f"{type(exc).__name__}: {exc.strerror or exc}; the files in it are not read"})

    files = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            for root, dirs, names in os.walk(item, onerror=unreadable):
                dirs.sort()
                files.extend(Path(root) / n for n in sorted(names))
        elif item.exists() or item.is_symlink():
            files.append(item)
        else:
            raise CtrobustError(f"input {item} does not exist")
    out = []
    for f in files:
        r = f.resolve()
        if r in exclude or any(r.name.startswith(f".{e.name}.") for e in exclude):
            continue
        if regular(f):
            out.append(f)
    return out


def load_salt(salt_file: str | os.PathLike | None = None) -> bytes:
    """The pseudonym salt: the bytes of ``salt_file`` (at least 16), or 32 fresh random bytes."""
    if salt_file is None:
        return secrets.token_bytes(32)
    path = Path(salt_file)
    if not path.is_file():
        raise CtrobustError(f"salt file {path} does not exist; create one with e.g. "
                            "`python -c \"import secrets; print(secrets.token_hex(32))\" > salt.txt`")
    salt = path.read_bytes().strip()
    if len(salt) < MIN_SALT_BYTES:
        raise CtrobustError(f"salt file {path} holds {len(salt)} bytes; use at least {MIN_SALT_BYTES} random bytes")
    return salt


def pseudonym(salt: bytes, kind: str, value: str) -> str:
    """16 hex digits of HMAC-SHA256(salt, kind + NUL + value): stable for one salt, opaque without it."""
    return hmac.new(salt, f"{kind}\0{value}".encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def split_patients(patients, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> dict:
    """Assign each patient to one split, deterministically for a given set of patients and seed.

    Counts: ``round(P * fraction)`` patients for val and test, at least one each when the fraction is
    positive and there are 3 or more patients, always leaving at least one for train. The patients are
    sorted, permuted by ``numpy.random.default_rng(seed)``; test takes the first, val the next.

    Returns ``{patient: split}``.
    """
    order = sorted(set(patients))
    n = len(order)
    counts = split_counts(n, val_fraction, test_fraction)
    n_val, n_test = counts["val"], counts["test"]
    if n >= 3:
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
    while n_val + n_test > max(n - 1, 0):
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    perm = np.random.default_rng(seed).permutation(n)
    out = {}
    for rank, idx in enumerate(perm):
        out[order[idx]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def _read_safely(path: str, window, size, fov) -> FileResult:
    """:func:`read_ct_file`, and a skip (never an exception) should it raise all the same."""
    try:
        return read_ct_file(path, window, size, fov)
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop the run
        return FileResult(path=str(path), skip="unreadable", detail=exception_text(exc))


def _worker_init() -> None:
    """Pool workers leave SIGINT and SIGTERM to the parent, which cancels the pool and cleans up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _read_all(files, task, workers, progress, sink, desc: str = "reading DICOM") -> None:
    """Run ``task`` (path -> FileResult) over ``files`` (in a process pool if workers > 1), in order, into ``sink``."""
    from ctrobust.progress import tqdm  # bars only on a terminal

    bar = tqdm(total=len(files), desc=desc, unit="file", disable=not progress)
    try:
        if workers <= 1:
            for f in files:
                sink(task(str(f)))
                bar.update()
            return
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init)
        try:
            for res in pool.map(task, [str(f) for f in files], chunksize=max(1, min(16, len(files) // (4 * workers)))):
                sink(res)
                bar.update()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    finally:
        bar.close()


def check_options(*, size, window, val_fraction, test_fraction, seed, fov, max_clipped=MAX_CLIPPED):
    """Validate the options shared by the preparations; returns ``(window_name, level, width)``.

    Raises :class:`CtrobustError` naming the option and the accepted values.
    """
    try:
        window_name, level, width = parse_window(window)
        split_counts(10, val_fraction, test_fraction)
    except ValueError as exc:
        raise CtrobustError(str(exc)) from None
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or int(size) < 8:
        raise CtrobustError(f"size must be a whole number of pixels, at least 8, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CtrobustError(f"seed must be an integer >= 0 (numpy seeds cannot be negative), got {seed!r}")
    if fov is not None and not (fov > 0 and math.isfinite(fov)):
        raise CtrobustError(f"fov must be a positive, finite length in mm, got {fov}")
    if not (0.0 < float(max_clipped) <= 1.0):
        raise CtrobustError(f"max_clipped must be a fraction in (0, 1], got {max_clipped}")
    return window_name, level, width


def check_outputs(out, force: bool, qc_page: bool = True) -> tuple[Path, Path, Path | None]:
    """``(out, log, qc_dir)`` after refusing an existing output or QC folder without ``force``."""
    out = check_writable(out, force)
    qc_dir = qc_dir_for(out) if qc_page else None
    if qc_dir is not None and qc_dir.exists() and not force:
        raise CtrobustError(f"QC folder {qc_dir} already exists; pass --force to overwrite it (or --no-qc-page)")
    return out, log_path_for(out), qc_dir


def prepare_dicom(inputs, out, *, size: int = 256, window="full", val_fraction: float = 0.1,
                  test_fraction: float = 0.1, seed: int = 0, fov: float | None = None, workers: int = 1,
                  salt_file=None, keep_flagged: bool = False, max_clipped: float = MAX_CLIPPED,
                  allow_mixed_spacing: bool = False, qc_page: bool = True, force: bool = False,
                  progress: bool | None = None) -> dict:
    """Turn DICOM files and folders into a prepared-slice HDF5 file, a JSON log and a QC page.

    Parameters
    ----------
    inputs : path-like or list of them
        Files and folders (read recursively, any extension).
    out : path-like
        Output HDF5 file; refused if it exists unless ``force``. Written atomically.
    size : int
        N, output side in pixels.
    window : str or (level, width)
        Preset (``abdomen``, ``lung``, ``bone``, ``brain``, ``full``) or ``"LEVEL,WIDTH"`` in HU.
    val_fraction, test_fraction : float
        Fractions of *patients* in val and test (see :func:`split_patients`).
    seed : int
        Seed of the patient split.
    fov : float or None
        Output field of view in mm, the same for every slice; None: each slice's own longer side.
    workers : int
        Processes reading files (1: in this process).
    salt_file : path-like or None
        File whose bytes salt the pseudonyms (keep it secret and apart from the data); None: a random
        salt that is forgotten after the run.
    keep_flagged : bool
        Keep constant and saturated slices (:func:`ctrobust.data.qc.flag_slice`); they are listed either way.
    max_clipped : float
        Fraction of pixels at the window's minimum or maximum from which a slice is saturated.
    allow_mixed_spacing : bool
        Write an output whose pixel sizes differ by more than a factor
        :data:`~ctrobust.data.qc.SPACING_REFUSE_RATIO` (refused otherwise; ``fov`` avoids it).
    qc_page : bool
        Write the QC page ``DATASET.qc/qc.md`` (thumbnails per split, pixel-size histogram).
    progress : bool or None
        Show tqdm bars (None: when stderr is a terminal).

    Returns
    -------
    dict
        The report also written to the log (:func:`log_path_for`): files, kept slices, skips by reason
        and per file, the used files with their split, QC (flagged slices, pixel sizes), patients /
        series / slices per split, warnings.

    Raises
    ------
    CtrobustError
        Bad options, an existing output without ``force``, no CT slice in the inputs, or (without
        ``allow_mixed_spacing``) pixel sizes that differ too much; the log is written in the last two cases.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise CtrobustError("no input given: pass DICOM files or folders")
    window = check_options(size=size, window=window, val_fraction=val_fraction, test_fraction=test_fraction,
                           seed=seed, fov=fov, max_clipped=max_clipped)
    out, log_path, qc_dir = check_outputs(out, force, qc_page)
    salt = load_salt(salt_file)
    for stale in (out, log_path):  # temporary files of killed earlier runs (SIGKILL, power loss)
        remove_stale_temporaries(stale)
    problems: list = []
    files = outside(collect_files(inputs, exclude=(out, log_path), problems=problems), qc_dir_for(out))
    report = new_report("ctrobust_prepare_dicom_log", inputs, files, problems, out, window, size=size,
                        val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, fov=fov,
                        salt_file=salt_file, keep_flagged=keep_flagged, max_clipped=max_clipped)
    task = functools.partial(_read_safely, window=window[1:], size=int(size), fov=fov)
    return run_pipeline(files, task, report, out=out, log_path=log_path, qc_dir=qc_dir, salt=salt, window=window,
                        size=int(size), val_fraction=val_fraction, test_fraction=test_fraction, seed=int(seed),
                        fov=fov, workers=workers, force=force, progress=progress, keep_flagged=keep_flagged,
                        max_clipped=max_clipped, allow_mixed_spacing=allow_mixed_spacing, source="dicom",
                        command="prepare-dicom", desc="reading DICOM")


def outside(files, folder: Path) -> list:
    """``files`` less those inside ``folder`` (the QC folder of the output, or its temporary twins)."""
    folder = Path(folder).resolve()
    keep = []
    for f in files:
        parents = Path(f).resolve().parents
        if any(p == folder or (p.parent == folder.parent and p.name.startswith(f".{folder.name}.")) for p in parents):
            continue
        keep.append(f)
    return keep


def new_report(kind: str, inputs, files, problems, out, window, *, size, val_fraction, test_fraction, seed, fov,
               salt_file, keep_flagged, max_clipped, **extra_options) -> dict:
    """The report/log skeleton shared by the preparations (filled in by :func:`run_pipeline`)."""
    window_name, level, width = window
    return {
        kind: 1,
        "inputs": [str(p) for p in inputs],
        "options": {"size": int(size), "window": window_name, "window_level": level, "window_width": width,
                    "val_fraction": val_fraction, "test_fraction": test_fraction, "seed": int(seed),
                    "fov_mm": fov, "salt": "from salt file" if salt_file else "random, not stored",
                    "keep_flagged": bool(keep_flagged), "max_clipped": float(max_clipped), **extra_options},
        "files_found": len(files) + sum(p["reason"] == "not-regular" for p in problems),
        "files_used": 0,
        "slices_kept": 0,
        "skipped_by_reason": {},
        "skipped": [p for p in problems if p["reason"] == "not-regular"],
        "unreadable_folders": [{"path": p["path"], "detail": p["detail"]} for p in problems
                               if p["reason"] == "unreadable-folder"],
        "used": [],
        "warnings": {},
        "qc": {"flagged_slices": [], "pixel_spacing": {}, "spacing_warning": None, "notes": []},
        "splits": {},
        "output": str(out),
    }


def run_pipeline(files, task, report, *, out, log_path, qc_dir, salt, window, size, val_fraction, test_fraction,
                 seed, fov, workers, force, progress, keep_flagged, max_clipped, allow_mixed_spacing, source,
                 command, desc) -> dict:
    """Read ``files`` with ``task`` (path -> :class:`FileResult`), QC, split, pseudonymise, write; see
    :func:`prepare_dicom`. Shared by ``prepare-dicom`` and ``prepare-volumes``."""
    import h5py

    from ctrobust.data.qc import SPACING_REFUSE_RATIO, SPACING_WARN_RATIO, flag_slice, spacing_advice, spacing_spread

    if progress is None:
        progress = sys.stderr.isatty()
    workers = max(1, int(workers or 1))
    level, width = window[1], window[2]
    frames, frame_paths = [], []  # metadata of kept frames (images go to the scratch file), and their files
    used = {}  # path -> its entry in report["used"]
    seen = {}
    warn_counts = Counter()
    scratch_path = new_temporary(out, ".scratch.tmp")
    try:
        with h5py.File(scratch_path, "w") as scratch:
            store = scratch.create_dataset("images", shape=(0, size, size), maxshape=(None, size, size),
                                           dtype="float32", chunks=(1, size, size))

            def sink(res):
                if res.skip is None and res.frames and res.frames[0].sop_uid:
                    first = seen.get(res.frames[0].sop_uid)
                    if first is not None:
                        res.skip, res.detail, res.frames = "duplicate", f"same SOP instance as {first}", []
                    else:
                        seen[res.frames[0].sop_uid] = res.path
                if res.skip is None:
                    kept, flags = [], []
                    for fr in res.frames:
                        reason, detail = flag_slice(fr.image, (level, width), max_clipped)
                        if reason:
                            flags.append((reason, detail))
                            report["qc"]["flagged_slices"].append(
                                {"path": res.path, "frame": int(fr.frame_index), "reason": reason, "detail": detail,
                                 "kept": bool(keep_flagged)})
                            if not keep_flagged:
                                continue
                        kept.append(fr)
                    if not kept:
                        reasons = sorted({r for r, _ in flags})
                        res.skip = reasons[0] if len(reasons) == 1 else "saturated"
                        res.detail = (flags[0][1] if len(flags) == 1 else
                                      f"all {len(flags)} slices flagged ({', '.join(reasons)}); first: {flags[0][1]}")
                    res.frames = kept
                if res.skip is not None:
                    report["skipped"].append({"path": res.path, "reason": res.skip, "detail": res.detail})
                    return
                warn_counts.update(res.warnings)
                start = store.shape[0]
                store.resize(start + len(res.frames), axis=0)
                store[start:] = np.stack([fr.image for fr in res.frames])
                for k, fr in enumerate(res.frames):
                    fr.image = start + k  # from here on: the frame's row in the scratch store
                    frames.append(fr)
                    frame_paths.append(res.path)
                used[res.path] = {"path": res.path, "slices": len(res.frames), "split": None,
                                  "_patient": res.frames[0].patient_id}
                report["files_used"] += 1

            _read_all(files, task, workers, progress, sink, desc)
            report["skipped_by_reason"] = dict(Counter(s["reason"] for s in report["skipped"]))
            report["warnings"] = {k: v for k, v in sorted(warn_counts.items())}
            if not frames:
                _write_log(log_path, report)
                reasons = ", ".join(f"{n} {r}" for r, n in sorted(report["skipped_by_reason"].items())) or "no files"
                what = "CT image slice" if source == "dicom" else "slice"
                raise CtrobustError(f"no {what} found in {len(files)} file(s) under the inputs "
                                    f"(skipped: {reasons}); see {log_path}")
            spread = spacing_spread([fr.pixel_spacing for fr in frames], frame_paths)
            report["qc"]["pixel_spacing"] = spread
            if spread["ratio"] > SPACING_WARN_RATIO:
                report["qc"]["spacing_warning"] = spacing_advice(spread, command)
                if spread["ratio"] > SPACING_REFUSE_RATIO and not allow_mixed_spacing:
                    _write_log(log_path, report)
                    raise CtrobustError(f"{report['qc']['spacing_warning']}; or pass --allow-mixed-spacing "
                                        f"to write them as they are. Nothing was written "
                                        f"but the log {log_path}")
            if spread["unknown"] and spread["counts"]:
                report["qc"]["notes"].append(f"{spread['unknown']} slice(s) have no known pixel size (no PixelSpacing) "
                                             "beside slices with one: their scale is a guess")
            assignment = _write_output(out, frames, store, report, salt, window, size, val_fraction, test_fraction,
                                       seed, fov, force, progress, source)
    finally:
        if os.path.exists(scratch_path):
            os.unlink(scratch_path)
    report["slices_kept"] = len(frames)
    for entry in used.values():
        entry["split"] = assignment[entry.pop("_patient")]
    report["used"] = list(used.values())
    for split in ("val", "test"):
        if report["splits"].get(split, {}).get("slices", 0) == 0:
            patients = len(assignment)
            report["qc"]["notes"].append(
                f"the {split} split is empty ({patients} patient(s); with fewer than 3 patients all go to train)"
                + ("; `ctrobust train` then trains without validation and picks best.pt by the training loss"
                   if split == "val" else "; evaluate on another prepared file"))
    if qc_dir is not None:
        try:
            report["qc_page"] = str(_write_qc(out, qc_dir, report, force))
        except Exception as exc:  # noqa: BLE001 - the dataset is written; a failed page must not lose it
            report["qc"]["notes"].append(f"the QC page could not be written: {type(exc).__name__}: {exc}")
    _write_log(log_path, report)
    report["log"] = str(log_path)
    return report


def _write_qc(out: Path, qc_dir: Path, report: dict, force: bool) -> Path:
    """The QC page into a temporary folder beside ``qc_dir``, renamed over it when complete."""
    import shutil
    import tempfile

    from ctrobust.data.qc import write_qc_page

    tmp = Path(tempfile.mkdtemp(prefix=f".{qc_dir.name}.", suffix=".tmp", dir=qc_dir.parent))
    try:
        write_qc_page(out, tmp, report)
        if qc_dir.exists():
            if not force:
                raise CtrobustError(f"QC folder {qc_dir} appeared while writing; pass --force to overwrite it")
            shutil.rmtree(qc_dir)
        os.replace(tmp, qc_dir)
        os.chmod(qc_dir, 0o777 & ~_umask())
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return qc_dir / "qc.md"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_slices(images, out, *, patients=None, positions=None, pixel_spacing=None, val_fraction: float = 0.1,
                 test_fraction: float = 0.1, seed: int = 0, salt_file=None, force: bool = False,
                 description: str = "slices written with ctrobust.data.write_slices") -> dict:
    """Write plain arrays as a prepared-slice HDF5 file, split by patient like ``prepare-dicom``.

    Parameters
    ----------
    images : array (n, N, N)
        Intensities in [0, 1] (window HU first, e.g. with :func:`ctrobust.data.dicom.apply_window`);
        finite, else refused.
    out : path-like
        Output HDF5 file; refused if it exists unless ``force``. Written atomically.
    patients : sequence of n str, or None
        The patient of each slice (any text: it is pseudonymised with the salted HMAC and never stored).
        Slices of one patient always land in one split. None: every slice is its own patient, with a
        warning (slices of one person could then fall into train and test).
    positions, pixel_spacing : sequence of n float, or None
        Slice positions and pixel sizes in mm (NaN: unknown, the default).
    val_fraction, test_fraction, seed : as :func:`split_patients`.
    salt_file : path-like or None
        As in :func:`prepare_dicom` (None: a random salt, never stored).

    Returns
    -------
    dict
        ``{"out", "splits": {split: {"patients", "slices"}}}``.
    """
    import warnings

    import h5py

    from ctrobust.data.store import DataValidationError, _check_slice

    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[1] != images.shape[2] or images.shape[0] == 0:
        raise CtrobustError(f"images must be an array (n, N, N) of square slices with n >= 1, got shape {images.shape}")
    if images.dtype.kind not in "fiub":
        raise CtrobustError(f"images must be numbers, got dtype {images.dtype}")
    n, size = int(images.shape[0]), int(images.shape[1])
    for i in range(n):
        try:
            _check_slice("images", i, images[i])
        except DataValidationError as exc:
            raise CtrobustError(str(exc)) from None
    try:
        split_counts(10, val_fraction, test_fraction)
    except ValueError as exc:
        raise CtrobustError(str(exc)) from None
    if patients is None:
        warnings.warn("write_slices without patients=: every slice is its own patient, so slices of one person "
                      "may land in train and test; pass patients= to keep each patient in one split", stacklevel=2)
        patients = [f"slice-{i}" for i in range(n)]
    patients = [str(p) for p in patients]
    columns = {"patients": patients}
    for name, values in (("positions", positions), ("pixel_spacing", pixel_spacing)):
        columns[name] = np.full(n, np.nan) if values is None else np.asarray(values, dtype=np.float64).reshape(-1)
    for name, values in columns.items():
        if len(values) != n:
            raise CtrobustError(f"{name} has {len(values)} entries for {n} images; give one per slice")
    salt = load_salt(salt_file)
    assignment = split_patients(patients, val_fraction, test_fraction, seed)
    order = {p: i for i, p in enumerate(np.random.default_rng(seed).permutation(sorted(assignment)))}
    splits = {}
    with atomic_output(out, force=force) as tmp:
        with h5py.File(tmp, "w") as f:
            writer = SliceWriter(f, size)
            for split in SPLITS:
                for patient in sorted((p for p in assignment if assignment[p] == split), key=order.get):
                    rows = [i for i in range(n) if patients[i] == patient]
                    key = pseudonym(salt, "patient", patient)
                    writer.append(split, images[rows].astype(np.float32), key, key,
                                  columns["positions"][rows], columns["pixel_spacing"][rows])
            counts = writer.finish({"source": "arrays", "description": description, "seed": int(seed),
                                    "val_fraction": float(val_fraction), "test_fraction": float(test_fraction),
                                    "pseudonym": "hmac-sha256-64bit"})
    for split in SPLITS:
        splits[split] = {"patients": sum(1 for p in assignment.values() if p == split), "slices": counts[split]}
    return {"out": str(out), "splits": splits}


def _order_key(fr):
    pos = fr.position if math.isfinite(fr.position) else math.inf
    inst = fr.instance_number if math.isfinite(fr.instance_number) else math.inf
    return pos, inst, fr.frame_index


def _write_output(out, frames, store, report, salt, window, size, val_fraction, test_fraction, seed, fov,
                  force, progress, source="dicom"):
    import h5py
    from ctrobust.progress import tqdm  # bars only on a terminal

    assignment = split_patients([fr.patient_id for fr in frames], val_fraction, test_fraction, seed)
    groups = defaultdict(list)  # (patient, study, series) -> frames
    for fr in frames:
        groups[(fr.patient_id, fr.study_uid, fr.series_uid)].append(fr)
    patient_order = {p: i for i, p in enumerate(np.random.default_rng(seed).permutation(sorted(assignment)))}
    name, level, width = window
    with atomic_output(out, force=force) as tmp:
        with h5py.File(tmp, "w") as f:
            writer = SliceWriter(f, size)
            bar = tqdm(total=len(frames), desc="writing", unit="slice", disable=not progress)
            for split in SPLITS:
                keys = sorted((k for k in groups if assignment[k[0]] == split),
                              key=lambda k: (patient_order[k[0]], k[1], k[2]))
                for patient, study, series in keys:
                    series_frames = groups[(patient, study, series)]
                    if all(math.isfinite(fr.position) for fr in series_frames):
                        series_frames.sort(key=_order_key)
                    else:  # fallback: InstanceNumber
                        series_frames.sort(key=lambda fr: _order_key(fr)[1:])
                    idx = [fr.image for fr in series_frames]
                    images = np.stack([store[i] for i in idx])
                    writer.append(split, images, pseudonym(salt, "patient", patient),
                                  pseudonym(salt, "series", f"{study}|{series}"),
                                  [fr.position for fr in series_frames],
                                  [fr.pixel_spacing for fr in series_frames])
                    bar.update(len(idx))
            bar.close()
            writer.finish({
                "source": source,
                "description": f"CT slices prepared by ctrobust prepare-{'dicom' if source == 'dicom' else 'volumes'}; "
                               "pseudonyms are salted HMAC-SHA256 (salt not stored)",
                "window": name,
                "window_level": float(level),
                "window_width": float(width),
                "hu_range": np.array([level - width / 2, level + width / 2]),
                "fov_mm": float(fov) if fov else float("nan"),
                "seed": seed,
                "val_fraction": float(val_fraction),
                "test_fraction": float(test_fraction),
                "pseudonym": "hmac-sha256-64bit",
            })
            for split in SPLITS:
                g = f[split]
                report["splits"][split] = {"patients": int(g.attrs["n_patients"]),
                                           "series": int(g.attrs["n_series"]), "slices": int(g.attrs["n_images"])}
    return assignment


def _write_log(path: Path, report: dict) -> None:
    # owner-only: the log names input paths (often patient names); the dataset gets the usual mode
    with atomic_output(path, force=True, mode=0o600) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")


_SHOWN_REASONS = ("bad-header", "unreadable", "decode-error", "truncated", "not-regular", "not-nifti",
                  "no-patient-key")
_SHOWN_FILES = 20


def format_summary(report: dict) -> str:
    """A plain-text summary table of a :func:`prepare_dicom` report.

    Counts skipped files by reason; for damaged input (bad-header, unreadable, decode-error, truncated,
    not-regular) it names the first 20 files of each reason with their detail; it names every folder
    that could not be read, the first 20 flagged slices, the pixel sizes, the QC warnings and notes
    (mixed pixel sizes, empty splits) and the QC page.
    """
    lines = [
        f"files read        {report['files_found']:>8}",
        f"files used        {report['files_used']:>8}",
        f"CT slices kept    {report['slices_kept']:>8}",
        f"files skipped     {len(report['skipped']):>8}",
    ]
    for reason, n in sorted(report["skipped_by_reason"].items()):
        lines.append(f"  {reason:<16}{n:>7}   {SKIP_REASONS.get(reason, '')}")
        if reason in _SHOWN_REASONS:  # damaged input worth a look: name the first files
            files = [s for s in report["skipped"] if s["reason"] == reason]
            lines += [f"      {s['path']}: {s['detail']}" for s in files[:_SHOWN_FILES]]
            if len(files) > _SHOWN_FILES:
                lines.append(f"      ... and {len(files) - _SHOWN_FILES} more")
    if report["skipped"]:
        lines.append(f"  (every skipped file with its reason: {report.get('log') or log_path_for(report['output'])})")
    qc = report.get("qc", {})
    flagged = qc.get("flagged_slices", [])
    if flagged:
        kept = report.get("options", {}).get("keep_flagged")
        by_reason = Counter(s["reason"] for s in flagged)
        lines.append(f"slices flagged    {len(flagged):>8}   " + ", ".join(f"{n} {r}" for r, n in sorted(by_reason.items()))
                     + (" (kept: --keep-flagged)" if kept else " (skipped; --keep-flagged keeps them)"))
        lines += [f"      {s['path']} frame {s['frame']}: {s['reason']}: {s['detail']}" for s in flagged[:_SHOWN_FILES]]
        if len(flagged) > _SHOWN_FILES:
            lines.append(f"      ... and {len(flagged) - _SHOWN_FILES} more")
    spread = qc.get("pixel_spacing") or {}
    if spread.get("counts"):
        sizes = ", ".join(f"{k} mm ({n})" for k, n in list(spread["counts"].items())[:6])
        more = len(spread["counts"]) - 6
        lines.append(f"pixel size (mm)   {sizes}" + (f", ... {more} more" if more > 0 else ""))
    if report.get("used"):
        lines.append(f"  (every used file with its split: {report.get('log') or log_path_for(report['output'])})")
    for msg, n in report.get("warnings", {}).items():
        lines.append(f"warning: {msg} ({n} file(s))")
    if qc.get("spacing_warning"):
        lines.append(f"warning: {qc['spacing_warning']}")
    for note in qc.get("notes", []):
        lines.append(f"note: {note}")
    for folder in report.get("unreadable_folders", []):
        lines.append(f"warning: folder {folder['path']} could not be read, its files are missing ({folder['detail']})")
    if report["splits"]:
        lines.append("")
        lines.append(f"{'split':<8}{'patients':>10}{'series':>8}{'slices':>8}")
        for split in SPLITS:
            s = report["splits"].get(split, {"patients": 0, "series": 0, "slices": 0})
            lines.append(f"{split:<8}{s['patients']:>10}{s['series']:>8}{s['slices']:>8}")
    if report.get("qc_page"):
        lines.append(f"\nQC page (thumbnails per split, pixel-size histogram; no identifiers): {report['qc_page']}")
    return "\n".join(lines)
