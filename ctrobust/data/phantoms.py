"""Built-in data: CT-like random-ellipse phantoms and the Shepp-Logan phantom, intensities in [0, 1].

A random phantom is a body cross-section: an elliptical body with a darker subcutaneous-fat rim, either a
thorax (two dark lungs, ribs) or an abdomen (liver-, kidney- and bowel-like ellipses), a bright vertebra
with darker marrow, and a few small random structures (lesions, vessels: some only a few pixels wide).
Values are windowed intensities: 0 is air, about 0.25 fat, 0.4-0.55 soft tissue, 0.8-1 bone.

Phantom ``i`` of ``random_ellipses(n, size, seed)`` is drawn from ``numpy.random.default_rng([seed, i])``
and its geometry is in resolution-free coordinates, so it does not depend on ``n`` (the first ``k``
phantoms of ``n`` are the ``k`` phantoms of ``random_ellipses(k, ...)``) and the same seed gives the same
anatomy at every ``size``. The global numpy random state is never used.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "random_ellipses",
    "random_phantom",
    "shepp_logan",
    "PhantomDataset",
    "split_seed",
    "DEFAULT_COUNTS",
]

# Default number of phantoms per split of the built-in data (the data every command uses without --data).
DEFAULT_COUNTS = {"train": 256, "val": 32, "test": 32}
_SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}


def split_seed(seed: int, split: str) -> int:
    """A deterministic seed for one split, distinct for train / val / test of the same ``seed``.

    Parameters
    ----------
    seed : int
        Non-negative base seed.
    split : {"train", "val", "test"}
    """
    if split not in _SPLIT_INDEX:
        raise ValueError(f"split must be one of {tuple(_SPLIT_INDEX)}, got {split!r}")
    return int(np.random.SeedSequence([int(seed), _SPLIT_INDEX[split]]).generate_state(1, dtype=np.uint32)[0])


def _paint(img: np.ndarray, coords: np.ndarray, cx, cy, a, b, theta, value, size: int) -> None:
    """Paint one filled ellipse (normalised coords in [-1, 1]) over ``img`` with anti-aliased edges.

    ``cx, cy`` centre (x to the right, y down), ``a, b`` semi-axes, ``theta`` rotation in radians,
    ``value`` the intensity inside. Pixels are blended by the fraction of a pixel width they lie inside.
    """
    r = max(a, b) + 2.0 / size
    # bounding box in pixel indices (pixel centres at coords)
    lo_x, hi_x = np.searchsorted(coords, [cx - r, cx + r])
    lo_y, hi_y = np.searchsorted(coords, [cy - r, cy + r])
    if lo_x >= hi_x or lo_y >= hi_y:
        return
    x = coords[lo_x:hi_x][None, :] - cx
    y = coords[lo_y:hi_y][:, None] - cy
    c, s = np.cos(theta), np.sin(theta)
    xr = c * x + s * y
    yr = -s * x + c * y
    rho = np.sqrt((xr / a) ** 2 + (yr / b) ** 2)
    # signed distance to the edge in pixels (approximately), 0.5 px ramp either side
    weight = np.clip(0.5 - (rho - 1.0) * min(a, b) * size / 2.0, 0.0, 1.0)
    block = img[lo_y:hi_y, lo_x:hi_x]
    block += weight * (value - block)


def _draw(rng: np.random.Generator) -> list[tuple]:
    """Draw the ellipses of one phantom: a list of (cx, cy, a, b, theta, value), painted in order."""
    u = rng.uniform
    shapes = []
    # body: fat rim then soft tissue
    bx, by = u(-0.05, 0.05), u(-0.05, 0.05)
    ba, bb = u(0.62, 0.86), u(0.45, 0.66)
    bt = u(-0.1, 0.1)
    shapes.append((bx, by, ba, bb, bt, u(0.22, 0.3)))
    rim = u(0.88, 0.95)
    ia, ib = ba * rim, bb * rim
    tissue = u(0.38, 0.46)
    shapes.append((bx, by, ia, ib, bt, tissue))
    thorax = rng.random() < 0.5
    if thorax:
        for side in (-1, 1):  # lungs
            shapes.append((bx + side * ia * u(0.38, 0.5), by - ib * u(0.0, 0.15), ia * u(0.3, 0.42),
                           ib * u(0.55, 0.75), side * u(0.0, 0.3), u(0.02, 0.1)))
            for _ in range(rng.integers(2, 5)):  # vessels inside the lung
                shapes.append((bx + side * ia * u(0.3, 0.55), by + ib * u(-0.5, 0.3), u(0.01, 0.03),
                               u(0.01, 0.03), 0.0, u(0.35, 0.5)))
        shapes.append((bx + u(-0.05, 0.05), by + u(-0.15, 0.05), ia * u(0.14, 0.22), ib * u(0.22, 0.32),
                       u(-0.5, 0.5), u(0.45, 0.55)))  # heart / mediastinum
        n_ribs = int(rng.integers(6, 11))
        for k in range(n_ribs):  # ribs just inside the rim
            phi = np.pi * (k + 0.5) / n_ribs + np.pi * u(-0.03, 0.03) + (np.pi if k % 2 else 0.0)
            shapes.append((bx + 0.93 * ia * np.cos(phi), by + 0.93 * ib * np.sin(phi), u(0.02, 0.035),
                           u(0.012, 0.02), phi, u(0.8, 1.0)))
    else:
        side = rng.choice([-1, 1])
        shapes.append((bx + side * ia * u(0.25, 0.45), by - ib * u(0.0, 0.3), ia * u(0.35, 0.5),
                       ib * u(0.4, 0.6), u(-0.4, 0.4), u(0.5, 0.58)))  # liver-like
        for s2 in (-1, 1):  # kidneys
            shapes.append((bx + s2 * ia * u(0.35, 0.5), by + ib * u(0.3, 0.5), ia * u(0.09, 0.14),
                           ib * u(0.14, 0.2), s2 * u(0.2, 0.6), u(0.5, 0.6)))
        for _ in range(rng.integers(2, 5)):  # bowel loops: darker (gas) or brighter (contrast)
            shapes.append((bx + ia * u(-0.4, 0.4), by + ib * u(-0.5, 0.1), ia * u(0.06, 0.15),
                           ib * u(0.06, 0.15), u(0, np.pi), u(0.05, 0.65)))
        shapes.append((bx + u(-0.06, 0.06), by + ib * u(0.2, 0.35), u(0.03, 0.05), u(0.03, 0.05), 0.0,
                       u(0.55, 0.7)))  # aorta
    # vertebra (cortical bone) with marrow and the spinal canal
    vx, vy = bx + u(-0.03, 0.03), by + ib * u(0.55, 0.7)
    va, vb = u(0.08, 0.12), u(0.07, 0.1)
    shapes.append((vx, vy, va, vb, u(-0.2, 0.2), u(0.85, 1.0)))
    shapes.append((vx, vy, 0.7 * va, 0.7 * vb, 0.0, u(0.55, 0.7)))
    shapes.append((vx, vy + vb * 1.25, 0.35 * va, 0.4 * vb, 0.0, u(0.4, 0.45)))
    # small random structures, some only a few pixels at 128 px
    for _ in range(rng.integers(3, 9)):
        rad, ang = np.sqrt(rng.random()) * 0.7, u(0, 2 * np.pi)
        shapes.append((bx + rad * ia * np.cos(ang), by + rad * ib * np.sin(ang), u(0.01, 0.08),
                       u(0.01, 0.08), u(0, np.pi), u(0.15, 0.8)))
    return shapes


def random_phantom(size: int, rng: np.random.Generator) -> np.ndarray:
    """One random CT-like phantom, float32 ``(size, size)`` in [0, 1], drawn from ``rng``."""
    size = int(size)
    coords = (np.arange(size) + 0.5) * (2.0 / size) - 1.0
    img = np.zeros((size, size), dtype=np.float64)
    for cx, cy, a, b, theta, value in _draw(rng):
        _paint(img, coords, cx, cy, a, b, theta, value, size)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def random_ellipses(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` random CT-like ellipse phantoms.

    Parameters
    ----------
    n : int
        Number of phantoms.
    size : int
        N, image side in pixels.
    seed : int
        Non-negative seed; phantom ``i`` uses ``numpy.random.default_rng([seed, i])``.

    Returns
    -------
    numpy.ndarray
        float32 ``(n, N, N)``, intensities in [0, 1] (0 air, ~0.25 fat, 0.4-0.55 soft tissue, 0.8-1 bone).
    """
    if n < 0 or size < 1:
        raise ValueError(f"need n >= 0 and size >= 1, got n={n}, size={size}")
    out = np.empty((int(n), int(size), int(size)), dtype=np.float32)
    for i in range(int(n)):
        out[i] = random_phantom(size, np.random.default_rng([int(seed), i]))
    return out


def shepp_logan(size: int) -> np.ndarray:
    """The (modified) Shepp-Logan phantom of scikit-image, resized with anti-aliasing.

    Returns float32 ``(size, size)`` in [0, 1].
    """
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    img = shepp_logan_phantom()
    if img.shape != (size, size):
        img = resize(img, (int(size), int(size)), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


class PhantomDataset:
    """A ``torch.utils.data.Dataset`` of ``n`` random phantoms, item ``(1, N, N)`` float32 in [0, 1].

    Parameters
    ----------
    n : int
        Number of phantoms.
    size : int
        N, image side in pixels.
    seed : int
        Seed of :func:`random_ellipses`; item ``i`` is ``random_ellipses(n, size, seed)[i]``.

    The phantoms are generated once, in memory (``n * N * N * 4`` bytes).
    """

    def __init__(self, n: int, size: int = 128, seed: int = 0):
        import torch

        self.n = int(n)
        self.image_size = int(size)
        self.seed = int(seed)
        self.images = torch.from_numpy(random_ellipses(self.n, self.image_size, self.seed))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):
        if isinstance(index, slice) or not np.isscalar(index):
            raise TypeError("index a PhantomDataset with one integer; use a DataLoader for batches")
        return self.images[int(index)].unsqueeze(0).clone()

    def __repr__(self) -> str:
        return f"PhantomDataset(n={self.n}, size={self.image_size}, seed={self.seed})"
