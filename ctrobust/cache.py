"""Where ctrobust keeps files it can rebuild (system matrices); they are written with
:func:`ctrobust.files.atomic_write`.

The directory is ``$CTROBUST_CACHE_DIR`` when that environment variable is set, else the user cache
directory of the platform (``platformdirs.user_cache_dir("ctrobust")``, e.g. ``~/.cache/ctrobust`` on
Linux). Everything in it may be deleted at any time; it is rebuilt on demand.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]

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
