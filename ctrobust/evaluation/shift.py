"""Distribution shift: clean metrics in and out of distribution, and the gap test-time training closes.

A *condition* is a set of test images with the operator that measures them and a noise level. A
trained network ``f`` is evaluated on the in-distribution condition (what it was trained for) and on a
shifted one, plain and with test-time training (:func:`ctrobust.reconstruction.ttt.test_time_train`); the share of the
SSIM gap closed by test-time training (Darestani, Liu & Heckel 2022) is

``gap_closed = (SSIM_ttt - SSIM_shifted) / (SSIM_in_dist - SSIM_shifted)``

with means over the test images. Shift types (:func:`make_shift`):

* ``"data"``: other images (e.g. phantoms -> real CT slices from a prepared HDF5 file), same operator;
* ``"views"``: fewer (or more) views: the network is rebuilt on the new RadonTransform with the same
  weights (:func:`rebuild_on_operator`), e.g. trained at 143 views, tested at 60;
* ``"noise"``: Gaussian noise added to the measurements, ``sigma = level * ||y||_2 / sqrt(size(y))``
  per sample (``level`` relative to the RMS of the clean measurement,
  :class:`ctrobust.operators.noise.GaussianNoise`).

Measurements come from :func:`ctrobust.operators.noise.measure`: sample ``i`` of a condition draws its
noise from a generator seeded from ``(seed, i)``, whatever the batch size.

Images are ``(B, 1, N, N)`` in [0, 1]; sinograms ``(B, 1, A, D)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ctrobust.evaluation.metrics import all_metrics
from ctrobust.operators.noise import GaussianNoise, NoiseChain, measure

__all__ = [
    "Condition",
    "ShiftResult",
    "SHIFT_KINDS",
    "stack_images",
    "rebuild_on_operator",
    "evaluate_condition",
    "gap_closed",
    "distribution_shift",
    "make_shift",
]

SHIFT_KINDS = ("data", "views", "noise")


@dataclass
class Condition:
    """Test images, the operator measuring them and the relative noise level.

    Attributes
    ----------
    name : str
    images : torch.Tensor
        ``(B, 1, N, N)`` in [0, 1].
    operator : LinearOperator
    noise : float
        Relative Gaussian noise level (:class:`ctrobust.operators.noise.GaussianNoise` ``level``); 0 for
        noise-free measurements.
    seed : int
        Seed of the noise (sample ``i`` draws from ``(seed, i)``, :func:`ctrobust.operators.noise.measure`).
    noise_model : NoiseModel, optional
        Measurement noise applied first (e.g. low-dose CT's :class:`ctrobust.operators.noise.LogPoissonNoise`);
        the relative Gaussian ``noise`` comes on top, drawn from the same per-sample generator.
    """

    name: str
    images: torch.Tensor
    operator: object
    noise: float = 0.0
    seed: int = 0
    noise_model: object = None

    def measurement_noise(self):
        """The noise of this condition as one model (None: noise-free)."""
        models = [m for m in (self.noise_model, GaussianNoise(level=self.noise) if self.noise else None) if m is not None]
        if not models:
            return None
        return models[0] if len(models) == 1 else NoiseChain(tuple(models))

    def measurements(self) -> torch.Tensor:
        """``y = A x (+ noise)``, ``(B, *operator.range_shape)``."""
        if not self.noise >= 0:
            raise ValueError(f"noise level must be >= 0, got {self.noise}")
        x = self.images.reshape(self.images.shape[0], *self.operator.domain_shape)
        return measure(self.operator, x, self.measurement_noise(), self.seed)


def stack_images(dataset, n: int | None = None) -> torch.Tensor:
    """The first ``n`` items (all if None) of a dataset of ``(1, N, N)`` tensors as ``(n, 1, N, N)``."""
    count = len(dataset) if n is None else min(int(n), len(dataset))
    if count == 0:
        raise ValueError("the dataset is empty")
    items = [dataset[i] for i in range(count)]
    items = [it[0] if isinstance(it, (tuple, list)) else it for it in items]
    return torch.stack([torch.as_tensor(it, dtype=torch.float32) for it in items])


def rebuild_on_operator(f, operator):
    """A copy of network ``f`` using ``operator`` instead of ``f.operator`` (same weights, eval mode).

    Models with a description (``to_config()``, or built by the model registry) are rebuilt by :func:`ctrobust.models.build_model` and given ``f``'s
    state dict (FBPConvNet: FBP on the new geometry, then the same U-Net). Raises ``ValueError`` if
    the weights do not fit (e.g. a CS network whose size depends on the operator).
    """
    from ctrobust.models.registry import build_model, model_config, model_factory_path

    config = model_config(f)
    if config is None:
        raise ValueError(f"cannot rebuild {type(f).__name__} on another operator: it has no to_config()")
    g = build_model(config, operator, factory=model_factory_path(f))
    try:
        g.load_state_dict(f.state_dict())
    except RuntimeError as exc:
        raise ValueError(f"{type(f).__name__}'s weights do not fit the new operator: {exc}") from exc
    return g.to(next(f.parameters()).device).eval()


def _metrics(rec: torch.Tensor, truth: torch.Tensor) -> dict[str, np.ndarray]:
    n = truth.shape[-1]
    return all_metrics(rec.reshape(rec.shape[0], 1, -1, n), truth)


def evaluate_condition(f, condition: Condition, *, ttt: bool = False, ttt_options: dict | None = None,
                       batch_size: int = 8, progress: bool = False) -> dict:
    """Clean metrics of ``f`` on one condition, plain or after test-time training.

    Returns ``{"mse", "relative_error", "psnr", "ssim"}`` per-sample arrays ``(B,)``; with ``ttt``
    also ``"ttt_steps"`` and ``"consistency_before"/"consistency_after"`` (relative l1 data error).
    ``progress`` shows a tqdm bar over the samples (named after the condition).
    """
    from ctrobust.progress import tqdm  # bars only on a terminal

    from ctrobust.reconstruction.ttt import test_time_train

    y = condition.measurements()
    recs, extra = [], {"ttt_steps": [], "consistency_before": [], "consistency_after": []}
    bar = tqdm(total=y.shape[0], desc=f"{condition.name}{' + TTT' if ttt else ''}", unit="sample", disable=not progress)
    for start in range(0, y.shape[0], batch_size):
        yb = y[start : start + batch_size]
        if ttt:
            options = dict(ttt_options or {})
            if condition.noise_model is not None and hasattr(condition.noise_model, "inverse_std"):
                options.setdefault("weights", condition.noise_model.inverse_std(yb))  # noisy bins count less
            rec, infos = test_time_train(f, condition.operator, yb, **options)
            extra["ttt_steps"] += [i.best_step for i in infos]
            extra["consistency_before"] += [i.consistency_before for i in infos]
            extra["consistency_after"] += [i.consistency_after for i in infos]
        else:
            was_training = getattr(f, "training", False)
            if hasattr(f, "eval"):
                f.eval()
            with torch.no_grad():
                rec = f(yb)
            if was_training:
                f.train()
        recs.append(rec.detach())
        bar.update(yb.shape[0])
    bar.close()
    out = _metrics(torch.cat(recs), condition.images)
    if ttt:
        out.update({k: np.asarray(v) for k, v in extra.items()})
    return out


def gap_closed(ssim_in_dist: float, ssim_shifted: float, ssim_ttt: float) -> float:
    """``(SSIM_ttt - SSIM_shifted) / (SSIM_in_dist - SSIM_shifted)``; NaN when there is no gap (|gap| < 1e-9)."""
    gap = ssim_in_dist - ssim_shifted
    if abs(gap) < 1e-9:
        return math.nan
    return (ssim_ttt - ssim_shifted) / gap


@dataclass
class ShiftResult:
    """Metrics in distribution, shifted, and shifted with test-time training.

    ``in_dist``, ``shifted``, ``ttt`` map metric names to per-sample arrays; ``summary()`` gives the
    means, the SSIM gap and the share of it closed.
    """

    in_dist_name: str
    shifted_name: str
    in_dist: dict
    shifted: dict
    ttt: dict | None = None
    options: dict = field(default_factory=dict)

    def summary(self) -> dict:
        row = {"in_distribution": self.in_dist_name, "shifted": self.shifted_name}
        for label, d in (("in_dist", self.in_dist), ("shifted", self.shifted), ("ttt", self.ttt)):
            if d is None:
                continue
            for metric in ("psnr", "ssim", "relative_error"):
                row[f"{metric}_{label}"] = float(np.mean(d[metric]))
        row["ssim_gap"] = row["ssim_in_dist"] - row["ssim_shifted"]
        if self.ttt is not None:
            row["gap_closed"] = gap_closed(row["ssim_in_dist"], row["ssim_shifted"], row["ssim_ttt"])
        return row

    def to_dict(self) -> dict:
        def plain(d):
            return None if d is None else {k: np.asarray(v).tolist() for k, v in d.items()}

        return {"summary": self.summary(), "options": self.options, "in_dist": plain(self.in_dist),
                "shifted": plain(self.shifted), "ttt": plain(self.ttt)}


def distribution_shift(f, in_dist: Condition, shifted: Condition, *, f_shifted=None, ttt: bool = True,
                       ttt_options: dict | None = None, batch_size: int = 8, progress: bool = False) -> ShiftResult:
    """Evaluate ``f`` in distribution and under a shift, plain and with test-time training.

    Parameters
    ----------
    f : nn.Module
        Trained network for ``in_dist.operator``.
    in_dist, shifted : Condition
    f_shifted : nn.Module, optional
        The network to use on the shifted condition (e.g. ``rebuild_on_operator(f, shifted.operator)``
        for a geometry shift); default ``f``.
    ttt : bool
        Also run test-time training on the shifted condition.
    ttt_options : dict
        Keyword arguments of :func:`ctrobust.reconstruction.ttt.test_time_train` (steps, lr, patience, ...).
    batch_size : int
        Samples per forward pass (test-time training treats each sample on its own anyway).
    progress : bool
        tqdm bars over the samples of each condition.
    """
    g = f if f_shifted is None else f_shifted
    result = ShiftResult(in_dist.name, shifted.name,
                         evaluate_condition(f, in_dist, batch_size=batch_size, progress=progress),
                         evaluate_condition(g, shifted, batch_size=batch_size, progress=progress),
                         options={"ttt": dict(ttt_options or {}), "noise_in_dist": in_dist.noise,
                                  "noise_shifted": shifted.noise})
    if ttt:
        result.ttt = evaluate_condition(g, shifted, ttt=True, ttt_options=ttt_options, batch_size=batch_size,
                                        progress=progress)
    return result


def make_shift(kind: str, f, images: torch.Tensor, *, shifted_images: torch.Tensor | None = None,
               n_angles: int | None = None, noise: float = 0.0, base_noise: float = 0.0, seed: int = 0,
               rebuild=None):
    """``(in_dist, shifted, f_shifted)`` for one shift type, ready for :func:`distribution_shift`.

    Parameters
    ----------
    kind : {"data", "views", "noise"}
    f : nn.Module
        Trained network with ``.operator`` (the in-distribution operator).
    images : torch.Tensor
        In-distribution test images ``(B, 1, N, N)``.
    shifted_images : torch.Tensor
        ``"data"`` only: the other images (same N).
    n_angles : int
        ``"views"`` only: views of the shifted RadonTransform (same image size and detectors).
    noise : float
        ``"noise"`` only: relative noise level of the shifted measurements (> ``base_noise``).
    base_noise : float
        Relative noise level of every in-distribution measurement (and of the other shifts).
    seed : int
        Seed of the measurement noise of both conditions.
    rebuild : callable, optional
        ``"views"`` only: ``rebuild(f, operator) -> f_shifted``; default :func:`rebuild_on_operator`
        (networks). A method without weights (FBP, TV) is simply built again on the new operator.
    """
    op = f.operator
    in_dist = Condition("in_distribution", images, op, base_noise, seed)
    if kind == "data":
        if shifted_images is None:
            raise ValueError("shift 'data' needs shifted_images (the other data set's test images)")
        if tuple(shifted_images.shape[1:]) != tuple(images.shape[1:]):
            raise ValueError(f"shifted images must be {tuple(images.shape[1:])} like the in-distribution ones, "
                             f"got {tuple(shifted_images.shape[1:])}; prepare them at the same size")
        return in_dist, Condition("other_data", shifted_images, op, base_noise, seed), f
    if kind == "views":
        import dataclasses

        from ctrobust.operators.radon import RadonTransform

        if not n_angles or n_angles < 1:
            raise ValueError("shift 'views' needs n_angles >= 1 (the views of the shifted geometry)")
        # same geometry (parallel or fan, same detector and distances), other number of views
        new_op = RadonTransform(dataclasses.replace(op.geometry, n_angles=int(n_angles)), backend=op.backend)
        rebuilt = (rebuild or rebuild_on_operator)(f, new_op)
        return in_dist, Condition(f"views_{n_angles}", images, new_op, base_noise, seed), rebuilt
    if kind == "noise":
        if not noise > base_noise:
            raise ValueError(f"shift 'noise' needs noise > base_noise ({base_noise}), got {noise}")
        return in_dist, Condition(f"noise_{noise:g}", images, op, noise, seed), f
    raise ValueError(f"unknown shift kind {kind!r}; choose one of {', '.join(SHIFT_KINDS)}")
