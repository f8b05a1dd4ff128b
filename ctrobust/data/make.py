"""Write built-in phantoms as a prepared-slice HDF5 file (``ctrobust make-phantoms``)."""

from __future__ import annotations

import os
import sys

import numpy as np

from ctrobust.data.phantoms import random_phantom, shepp_logan as _shepp_logan, split_seed
from ctrobust.data.store import SPLITS, SliceWriter, atomic_output

__all__ = ["make_phantoms", "split_counts"]


def split_counts(n: int, val_fraction: float, test_fraction: float) -> dict:
    """Slices per split: ``round(n * fraction)`` for val and test, the rest for train."""
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


def make_phantoms(out: str | os.PathLike, n: int = 320, size: int = 128, seed: int = 0, *,
                  val_fraction: float = 0.1, test_fraction: float = 0.1, shepp_logan: bool = True,
                  force: bool = False, progress: bool | None = None) -> dict:
    """Write ``n`` random-ellipse phantoms (plus Shepp-Logan) as a prepared-slice file.

    Split ``s`` holds the phantoms of ``load_split(None, s, size=size, n_phantoms=count_s, seed=seed)``,
    so the defaults (320 phantoms, 10 % val, 10 % test -> 256 / 32 / 32, size 128, seed 0) write exactly
    the built-in data every command uses without ``--data``.

    Parameters
    ----------
    out : path-like
        Output HDF5 file; refused if it exists unless ``force``. Written atomically.
    n : int
        Number of random phantoms over all splits.
    size : int
        N, image side in pixels.
    seed : int
        Base seed (each split derives its own, see ``phantoms.split_seed``).
    val_fraction, test_fraction : float
        Fractions of ``n`` for the val and test splits.
    shepp_logan : bool
        Append the Shepp-Logan phantom as the last slice of the test split (patient key ``shepp-logan``).
    progress : bool or None
        Show a tqdm bar (None: when stderr is a terminal).

    Returns
    -------
    dict
        ``{"out", "counts": {split: n}, "image_size", "seed"}``.
    """
    from ctrobust.progress import tqdm  # bars only on a terminal
    import h5py

    if n < 1 or size < 8:
        raise ValueError(f"need n >= 1 and size >= 8, got n={n}, size={size}")
    counts = split_counts(int(n), val_fraction, test_fraction)
    if progress is None:
        progress = sys.stderr.isatty()
    with atomic_output(out, force=force) as tmp:
        with h5py.File(tmp, "w") as f:
            writer = SliceWriter(f, size)
            bar = tqdm(total=sum(counts.values()), desc="phantoms", unit="img", disable=not progress)
            for split in SPLITS:
                base = split_seed(seed, split)
                for start in range(0, counts[split], 64):
                    idx = range(start, min(start + 64, counts[split]))
                    imgs = np.stack([random_phantom(size, np.random.default_rng([base, i])) for i in idx])
                    keys = [f"{split}-{i:06d}" for i in idx]
                    writer.append(split, imgs, keys, keys)
                    bar.update(len(idx))
            bar.close()
            if shepp_logan:
                writer.append("test", _shepp_logan(size), "shepp-logan", "shepp-logan")
            final = writer.finish({
                "source": "phantoms",
                "description": "random CT-like ellipse phantoms (ctrobust.data.phantoms)"
                               + (", Shepp-Logan last in test" if shepp_logan else ""),
                "seed": int(seed),
                "n_phantoms": int(n),
                "val_fraction": float(val_fraction),
                "test_fraction": float(test_fraction),
                "shepp_logan": bool(shepp_logan),
            })
    return {"out": str(out), "counts": final, "image_size": int(size), "seed": int(seed)}
