"""Small features: insert few-pixel disks into test images and score whether a method recovers them.

Heckel et al. ask whether reconstruction methods recover small, clinically relevant structures. Here a
feature is a disk of ``radius`` pixels whose intensity is raised by ``contrast`` (images on the [0, 1]
scale; the result is clipped to [0, 1]) at a random position inside the body. Each feature is scored by
comparing the mean inside the disk with the mean of a background ring around it:

* ``true_contrast = mean_disk(x) - mean_ring(x)`` on the truth (with the feature),
* ``recovered_contrast = mean_disk(x_hat) - mean_ring(x_hat)`` on the reconstruction,
* ``contrast_ratio = recovered_contrast / true_contrast`` (1: fully recovered, 0: gone),
* ``cnr = recovered_contrast / std_ring(x_hat)``, the local contrast-to-noise ratio,
* ``local_error = ||x_hat - x||_disk / ||x||_disk``, the relative error inside the disk,
* ``detected = contrast_ratio >= threshold`` (default ``DETECTION_THRESHOLD = 0.5``: at least half
  of the inserted contrast survives, a Rayleigh-like criterion).

The ring is the set of pixels with ``radius + RING_GAP < d <= radius + RING_GAP + RING_WIDTH`` from the
centre (``d`` in pixels between pixel centres), so the disk's blurred edge does not leak into it.
Scores are computed clean and under the adversarial attack of :func:`ctrobust.attacks.pga_attack`, whose
settings are one :class:`~ctrobust.attacks.AttackSettings` (default :data:`FEATURE_ATTACK`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ctrobust.attacks import AttackSettings, pga_attack

__all__ = [
    "FeatureSet",
    "insert_disks",
    "feature_scores",
    "evaluate_features",
    "DETECTION_THRESHOLD",
    "FEATURE_ATTACK",
    "RING_GAP",
    "RING_WIDTH",
]

DETECTION_THRESHOLD = 0.5
RING_GAP = 1.0
RING_WIDTH = 2.0
#: the attack of :func:`evaluate_features` unless given: APGD, 20 steps (a cheaper budget than a curve's 100)
FEATURE_ATTACK = AttackSettings(steps=20)


@dataclass
class FeatureSet:
    """Images with inserted disks.

    Attributes
    ----------
    images : torch.Tensor
        ``(B, 1, N, N)`` images with the features, [0, 1].
    masks : torch.Tensor
        ``(B, K, N, N)`` bool, the disk of feature ``k`` in image ``b``.
    rings : torch.Tensor
        ``(B, K, N, N)`` bool, its background ring.
    centers : torch.Tensor
        ``(B, K, 2)`` int64 pixel (row, column) of each centre.
    radius, contrast : float
        Disk radius (pixels) and added intensity ([0, 1] units).
    """

    images: torch.Tensor
    masks: torch.Tensor
    rings: torch.Tensor
    centers: torch.Tensor
    radius: float
    contrast: float


def _disk_and_ring(n: int, m: int, center, radius: float) -> tuple[np.ndarray, np.ndarray]:
    rr, cc = np.mgrid[:n, :m]
    d = np.hypot(rr - center[0], cc - center[1])
    inner = radius + RING_GAP
    return d <= radius, (d > inner) & (d <= inner + RING_WIDTH)


def insert_disks(
    images: torch.Tensor,
    *,
    n_features: int = 3,
    radius: float = 1.5,
    contrast: float = 0.2,
    seed: int = 0,
    body_threshold: float = 0.05,
) -> FeatureSet:
    """Insert ``n_features`` disks into each image at random positions inside the body.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, 1, N, N)`` images on the [0, 1] scale.
    n_features : int
        Disks per image (their disks and rings do not overlap).
    radius : float
        Disk radius in pixels (pixels whose centre is within ``radius`` of the disk centre).
    contrast : float
        Intensity added inside the disk, in [0, 1] units (may be negative for a dark feature).
    seed : int
        Seed of the positions (``numpy.random.default_rng``; the global RNG is untouched).
    body_threshold : float
        The body is where the image exceeds this value; a centre is valid when the disk and its ring
        lie entirely inside the body (Euclidean distance transform).

    Returns
    -------
    FeatureSet

    Raises
    ------
    ValueError
        If an image has no room for the requested features.
    """
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"insert_disks: images must be (B, 1, N, N), got {tuple(images.shape)}")
    if not radius > 0 or int(n_features) != n_features or n_features < 1:
        raise ValueError(f"insert_disks: need radius > 0 and n_features >= 1, got {radius}, {n_features}")
    rng = np.random.default_rng(seed)
    b, _, n, m = images.shape
    reach = radius + RING_GAP + RING_WIDTH
    arr = images.detach().cpu().double().numpy()[:, 0]
    out = arr.copy()
    masks = np.zeros((b, n_features, n, m), dtype=bool)
    rings = np.zeros_like(masks)
    centers = np.zeros((b, n_features, 2), dtype=np.int64)
    for i in range(b):
        body = arr[i] > body_threshold
        inside = ndimage.distance_transform_edt(np.pad(body, 1))[1:-1, 1:-1]
        free = inside > reach  # the whole ring stays inside the body
        for k in range(n_features):
            candidates = np.argwhere(free)
            if len(candidates) == 0:
                raise ValueError(
                    f"insert_disks: image {i} has no room for feature {k + 1} of radius {radius} px inside the "
                    f"body (threshold {body_threshold}); use fewer or smaller features"
                )
            c = candidates[rng.integers(len(candidates))]
            disk, ring = _disk_and_ring(n, m, c, radius)
            masks[i, k], rings[i, k], centers[i, k] = disk, ring, c
            out[i][disk] += contrast
            rr, cc = np.mgrid[:n, :m]
            free &= np.hypot(rr - c[0], cc - c[1]) > 2 * reach  # keep features and rings apart
    out = np.clip(out, 0.0, 1.0)
    return FeatureSet(
        images=torch.from_numpy(out[:, None]).to(images.device, images.dtype),
        masks=torch.from_numpy(masks).to(images.device),
        rings=torch.from_numpy(rings).to(images.device),
        centers=torch.from_numpy(centers),
        radius=float(radius),
        contrast=float(contrast),
    )


def feature_scores(reconstruction: torch.Tensor, features: FeatureSet, *, threshold: float = DETECTION_THRESHOLD) -> dict[str, np.ndarray]:
    """Per-feature scores (see the module docstring), each an array ``(B, K)``.

    ``reconstruction`` is ``(B, 1, N, N)``; the truth is ``features.images``. Keys: ``true_contrast``,
    ``recovered_contrast``, ``contrast_ratio``, ``cnr``, ``local_error``, ``detected`` (bool).
    """
    truth = features.images.detach().cpu().double()[:, 0]
    rec = reconstruction.detach().cpu().double()
    if rec.shape != features.images.shape:
        raise ValueError(f"feature_scores: reconstruction must be {tuple(features.images.shape)}, got {tuple(rec.shape)}")
    rec = rec[:, 0]
    masks = features.masks.cpu().double()
    rings = features.rings.cpu().double()

    def mean(img, w):
        return (img[:, None] * w).flatten(2).sum(2) / w.flatten(2).sum(2)

    true_c = mean(truth, masks) - mean(truth, rings)
    rec_c = mean(rec, masks) - mean(rec, rings)
    ring_var = mean(rec**2, rings) - mean(rec, rings) ** 2
    ring_std = ring_var.clamp_min(0).sqrt().clamp_min(1e-6)
    err = ((rec - truth)[:, None] ** 2 * masks).flatten(2).sum(2).sqrt()
    ref = (truth[:, None] ** 2 * masks).flatten(2).sum(2).sqrt().clamp_min(1e-12)
    ratio = rec_c / torch.where(true_c.abs() > 1e-12, true_c, torch.full_like(true_c, math.nan))
    return {
        "true_contrast": true_c.numpy(),
        "recovered_contrast": rec_c.numpy(),
        "contrast_ratio": ratio.numpy(),
        "cnr": (rec_c / ring_std).numpy(),
        "local_error": (err / ref).numpy(),
        "detected": (ratio >= threshold).numpy(),
    }


def evaluate_features(
    methods: dict,
    operator,
    images: torch.Tensor,
    *,
    eps=(0.0, 0.01),
    n_features: int = 3,
    radius: float = 1.5,
    contrast: float = 0.2,
    seed: int = 0,
    attack_region: str = "image",
    settings: AttackSettings = FEATURE_ATTACK,
    threshold: float = DETECTION_THRESHOLD,
    progress: bool = False,
) -> list[dict]:
    """Insert disks, reconstruct with every method, clean (``eps = 0``) and under attack; one row per feature.

    Parameters
    ----------
    methods : dict of str -> callable
        ``name -> f`` with ``f(y: (B, *operator.range_shape)) -> (B, 1, N, N)``, differentiable for the
        attack (networks, ``operator.fbp``, an unrolled TV solver).
    operator : LinearOperator
        Measurement operator (``y = A x`` with the features, noise-free).
    images : torch.Tensor
        ``(B, 1, N, N)`` test images in [0, 1].
    eps : sequence of float
        Attack sizes, relative to ``||y||_2`` per sample (``||delta|| <= eps ||y||``; absolute with
        ``settings.relative=False``); 0 means clean.
    attack_region : {"image", "features"}
        What the attack maximises: the squared error on the whole image (the robustness metric with the
        truth as target) or only inside the disks (the attack aims at hiding the features).
    settings : AttackSettings
        The attack at every eps > 0 (default :data:`FEATURE_ATTACK`: APGD, 20 steps); each attack's
        random starts come from a fresh generator seeded ``settings.seed``.
    n_features, radius, contrast, seed, threshold
        As in :func:`insert_disks` and :func:`feature_scores`.

    Returns
    -------
    list of dict
        Rows with keys ``method, eps, sample, feature, center_row, center_col`` and the scores.
    """
    if not isinstance(settings, AttackSettings):
        raise TypeError(f"settings must be an AttackSettings, got {type(settings).__name__}")
    if attack_region not in ("image", "features"):
        raise ValueError(f"attack_region must be 'image' or 'features', got {attack_region!r}")
    feats = insert_disks(images, n_features=n_features, radius=radius, contrast=contrast, seed=seed)
    x = feats.images
    y = operator(x).detach()
    region = feats.masks.any(1, keepdim=True).to(x.dtype)
    rows = []
    for name, f in methods.items():
        for e in eps:
            if e == 0:
                with torch.no_grad():
                    rec = f(y)
            else:
                if attack_region == "image":
                    res = pga_attack(f, y, x, float(e), settings, progress=progress)
                    rec = res.reconstruction
                else:
                    res = pga_attack(lambda v: f(v) * region, y, x * region, float(e), settings, progress=progress)
                    with torch.no_grad():
                        rec = f(y + res.delta)
            scores = feature_scores(rec, feats, threshold=threshold)
            for bi in range(x.shape[0]):
                for k in range(n_features):
                    row = {"method": name, "eps": float(e), "sample": bi, "feature": k,
                           "center_row": int(feats.centers[bi, k, 0]), "center_col": int(feats.centers[bi, k, 1])}
                    row.update({key: (bool(v[bi, k]) if key == "detected" else float(v[bi, k])) for key, v in scores.items()})
                    rows.append(row)
    return rows
