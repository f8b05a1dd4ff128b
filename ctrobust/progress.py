"""Progress bars: one rule for every long loop — bars only on a terminal.

A bar drawn into a pipe or a log file is noise (hundreds of carriage-return lines), so every loop of the
package that shows progress makes its bar with :func:`tqdm` here, a drop-in for ``tqdm.auto.tqdm`` that
is disabled unless the stream it writes to (``file``, default ``sys.stderr``) is a terminal. A caller's
own ``progress=False`` (``disable=True``) still turns it off on a terminal.
"""

from __future__ import annotations

import sys

__all__ = ["on_terminal", "tqdm"]


def on_terminal(stream=None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``) is a terminal; False for pipes, files and closed streams.
    A Jupyter kernel's output stream counts as a terminal (``tqdm.auto`` draws a widget there)."""
    stream = sys.stderr if stream is None else stream
    if type(stream).__module__.startswith("ipykernel."):
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed file
        return False


def tqdm(*args, disable: bool = False, **kwargs):
    """``tqdm.auto.tqdm(*args, **kwargs)``, disabled unless its stream is a terminal (or when ``disable``)."""
    from tqdm.auto import tqdm as _tqdm

    return _tqdm(*args, disable=bool(disable) or not on_terminal(kwargs.get("file")), **kwargs)
