"""Image-quality metrics, per sample.

Images are ``(B, 1, N, N)`` (or ``(B, n)`` vectors for MSE / relative error) with intensities on the
[0, 1] scale, so PSNR and SSIM use ``data_range=1`` unless told otherwise. PSNR and SSIM come from
scikit-image (``skimage.metrics``); MSE and relative error are computed in torch (float64).
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = ["mse", "relative_error", "psnr", "ssim", "all_metrics", "mean_std"]


def _pair(estimate: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if estimate.shape != truth.shape:
        raise ValueError(f"estimate and truth must have the same shape, got {tuple(estimate.shape)} and {tuple(truth.shape)}")
    return estimate.detach().to("cpu", torch.float64), truth.detach().to("cpu", torch.float64)


def mse(estimate: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """Mean squared error per sample, shape (B,)."""
    e, t = _pair(estimate, truth)
    return ((e - t) ** 2).flatten(1).mean(1).numpy()


def relative_error(estimate: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """``||estimate - truth||_2 / ||truth||_2`` per sample, shape (B,)."""
    e, t = _pair(estimate, truth)
    return ((e - t).flatten(1).norm(dim=1) / t.flatten(1).norm(dim=1).clamp_min(1e-300)).numpy()


def _images(e: torch.Tensor, t: torch.Tensor):
    if e.dim() != 4 or e.shape[1] != 1:
        raise ValueError(f"PSNR/SSIM need images shaped (B, 1, N, N), got {tuple(e.shape)}")
    return e[:, 0].numpy(), t[:, 0].numpy()


def psnr(estimate: torch.Tensor, truth: torch.Tensor, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio in dB per sample (skimage), shape (B,)."""
    e, t = _images(*_pair(estimate, truth))
    return np.array([peak_signal_noise_ratio(ti, ei, data_range=data_range) for ei, ti in zip(e, t)])


def ssim(estimate: torch.Tensor, truth: torch.Tensor, data_range: float = 1.0) -> np.ndarray:
    """Structural similarity per sample (skimage, 7x7 window, Gaussian weights off), shape (B,)."""
    e, t = _images(*_pair(estimate, truth))
    return np.array([structural_similarity(ti, ei, data_range=data_range) for ei, ti in zip(e, t)])


def all_metrics(estimate: torch.Tensor, truth: torch.Tensor, data_range: float = 1.0) -> dict[str, np.ndarray]:
    """``{"mse", "relative_error", "psnr", "ssim"}`` per sample; PSNR/SSIM only for image batches."""
    out = {"mse": mse(estimate, truth), "relative_error": relative_error(estimate, truth)}
    if estimate.dim() == 4:
        out["psnr"] = psnr(estimate, truth, data_range)
        out["ssim"] = ssim(estimate, truth, data_range)
    return out


def mean_std(name: str, values, *, ignore_nan: bool = False) -> dict:
    """``{"<name>_mean", "<name>_std"}``: the mean and the population std (``ddof=0``) of ``values`` in float64.

    The one mean/std summary of every table (robustness curves, evaluate, features, experiments);
    ``ignore_nan`` skips NaN entries (``np.nanmean`` / ``np.nanstd``).
    """
    arr = np.asarray(values, dtype=np.float64)
    if ignore_nan:
        return {f"{name}_mean": float(np.nanmean(arr)), f"{name}_std": float(np.nanstd(arr))}
    return {f"{name}_mean": float(arr.mean()), f"{name}_std": float(arr.std())}
