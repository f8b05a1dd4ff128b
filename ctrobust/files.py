"""Files and places every layer shares: atomic writes, output folders, the compute device.

The one home of three things that used to be copied across the package:

- :func:`atomic_path` / :func:`atomic_write` / :func:`write_bytes` / :func:`write_text`: a file is
  written to a temporary file beside it (``.NAME.PID.XXXXXXXX.tmp``) and renamed over the final name only
  when complete, so a reader never sees half a file; a temporary file left by a killed writer (its
  process no longer runs) is removed by the next write of the same file (:func:`remove_stale_temporaries`).
  Written files get the mode an ordinary new file gets (``0o666`` less the umask) unless ``mode`` is given.
  Used by result tables and figures (:mod:`ctrobust.evaluation.report`), checkpoints, run logs, prepared HDF5 files,
  the system-matrix cache and the experiment runners.
- :func:`check_output_dir` / :func:`prepare_output_dir`: refuse an existing non-empty output folder
  unless forced (or resumed), so no command overwrites an earlier result by accident.
- :func:`resolve_device`: ``"auto"`` / ``"cpu"`` / ``"cuda"`` / ``"cuda:1"`` to a ``torch.device``,
  refusing CUDA on a machine without it.

This module imports nothing from the rest of ctrobust but :mod:`ctrobust.errors` (it sits at the bottom
of the import graph, docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from ctrobust.errors import CtrobustError

__all__ = [
    "atomic_path",
    "atomic_write",
    "write_bytes",
    "write_text",
    "default_file_mode",
    "remove_stale_temporaries",
    "new_temporary",
    "check_output_dir",
    "prepare_output_dir",
    "resolve_device",
]


# -- atomic writes -----------------------------------------------------------------------------------
def default_file_mode() -> int:
    """The mode of an ordinary new file: ``0o666`` less the process umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _pid_running(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":
        return True  # never remove a file that might be in use (no safe liveness test off POSIX)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: the process exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of ``path`` left by killed writers; returns the removed paths.

    Temporary files of ``path`` are named ``.NAME.PID.*tmp`` beside it (:func:`new_temporary`); one is
    stale when no process with that PID runs on this machine. Files of running processes (another run
    writing the same output) are left alone.
    """
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or _pid_running(int(pid)):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def new_temporary(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """Create an empty temporary file ``.NAME.PID.XXXXXXXX<suffix>`` beside ``path`` (mode 0600)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp", mode: int | None = None,
                before_replace: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block completes.

    Any exception (including ``KeyboardInterrupt``, and SIGTERM under the command line, which raises
    there) deletes the temporary file and leaves an existing ``path`` untouched. Stale temporary files of
    ``path`` from killed runs are removed first. ``before_replace()`` runs just before the rename (e.g. a
    last check that may raise). The file gets ``mode`` (default :func:`default_file_mode`). The folder of
    ``path`` must exist.
    """
    path = Path(path)
    remove_stale_temporaries(path)
    tmp = new_temporary(path, suffix)
    try:
        yield tmp
        if before_replace is not None:
            before_replace()
        os.chmod(tmp, default_file_mode() if mode is None else mode)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, mode: int | None = None) -> Path:
    """Write a file atomically: ``write(tmp_path)`` fills a temporary file beside ``path``, then it is renamed.

    The folder of ``path`` is created when missing. Returns ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, mode=mode) as tmp:
        write(tmp)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


# -- output folders ----------------------------------------------------------------------------------
def check_output_dir(path: str | os.PathLike, force: bool = False, *, resume: bool | None = None) -> Path:
    """Refuse an output folder that is a file, or that holds files, unless ``force`` (or ``resume``).

    ``resume=None``: the command cannot resume; ``False``/``True``: it can (the message says so), and
    ``True`` accepts a non-empty folder. Only checks (creates nothing), so a command can refuse before
    its expensive work and before it writes anything.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CtrobustError(f"output {path} exists and is not a folder; choose another output folder")
    if path.is_dir() and any(path.iterdir()) and not (force or resume):
        hint = "pass force=True to overwrite its files" if resume is None else \
            "pass resume=True to continue that run, force=True to overwrite it"
        raise CtrobustError(f"output folder {path} is not empty; {hint}, or choose another output folder")
    return path


def prepare_output_dir(path: str | os.PathLike, force: bool = False, *, create: bool = True,
                       resume: bool | None = None) -> Path:
    """:func:`check_output_dir`, then create the folder (unless ``create=False``)."""
    path = check_output_dir(path, force, resume=resume)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


# -- device ------------------------------------------------------------------------------------------
def resolve_device(device):
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` as given.

    Refuses an unknown name and CUDA without a GPU (:class:`CtrobustError`). A ``torch.device`` passes.
    """
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise CtrobustError(f"unknown --device {device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CtrobustError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    return device
