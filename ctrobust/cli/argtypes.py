"""argparse ``type=`` callables shared by the subcommands (inputs are validated at parse time)."""

from __future__ import annotations

import argparse
import inspect
import math

__all__ = ["positive_int", "nonneg_int", "image_size", "nonneg_float", "positive_float", "eps_list",
           "signature_default", "MIN_IMAGE_SIZE"]

#: Smallest image side in pixels the commands accept (validation SSIM uses a 7 x 7 window).
MIN_IMAGE_SIZE = 8


def _number(text: str, kind, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def nonneg_int(text: str) -> int:
    value = _number(text, int, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def image_size(text: str) -> int:
    """An image side in pixels, at least :data:`MIN_IMAGE_SIZE`."""
    value = _number(text, int, f"an image size in pixels (an integer >= {MIN_IMAGE_SIZE})")
    if value < MIN_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"expected an image size of at least {MIN_IMAGE_SIZE} pixels "
                                         f"(SSIM uses a 7 x 7 window), got {text!r}")
    return value


def nonneg_float(text: str) -> float:
    value = _number(text, float, "a number >= 0")
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = nonneg_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def eps_list(text: str) -> list[float]:
    """Comma-separated numbers >= 0, e.g. ``0,0.005,0.01``."""
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if not parts:
        raise argparse.ArgumentTypeError("expected comma-separated numbers such as 0,0.005,0.01")
    return [nonneg_float(p) for p in parts]


def signature_default(func, name: str):
    """The default of parameter ``name`` of ``func``: CLI defaults come from the library's signatures."""
    return inspect.signature(func).parameters[name].default
