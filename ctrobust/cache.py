"""Where ctrobust keeps files it can rebuild (system matrices), and how it writes them safely.

The directory is ``$CTROBUST_CACHE_DIR`` when that environment variable is set, else the user cache
directory of the platform (``platformdirs.user_cache_dir("ctrobust")``, e.g. ``~/.cache/ctrobust`` on
Linux). Everything in it may be deleted at any time; it is rebuilt on demand.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["cache_dir", "atomic_write"]

ENV_VAR = "CTROBUST_CACHE_DIR"


def cache_dir(subdir: str | None = None, *, create: bool = True) -> Path:
    """The ctrobust cache directory (or its ``subdir``), created on request.

    Parameters
    ----------
    subdir : str, optional
        A sub-folder, e.g. ``"radon"``.
    create : bool
        Create the folder (and parents) if missing.

    Returns
    -------
    pathlib.Path
        ``$CTROBUST_CACHE_DIR[/subdir]`` if the variable is set and non-empty, else the platform's user
        cache directory for ``ctrobust``.
    """
    root = os.environ.get(ENV_VAR, "").strip()
    if root:
        path = Path(root).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_cache_dir("ctrobust", appauthor=False))
    if subdir:
        path = path / subdir
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write a file atomically: ``write(tmp)`` fills a temporary file beside ``path``, then ``os.replace``.

    A reader never sees a half-written file, and a crash leaves at most a stray ``.tmp`` file.

    Parameters
    ----------
    path : path-like
        Final file name.
    write : callable
        ``write(tmp_path)`` writes the whole content to ``tmp_path`` (a file name ending in ``.tmp``).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path
