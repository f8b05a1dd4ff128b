"""Measurement noise: one interface (:class:`NoiseModel`), its models, and the one :func:`measure`.

Models (each ``noise(y, generator) -> y_noisy`` on sinograms ``(B, 1, A, D)``, plus ``to_config()``,
``describe()``, ``inverse_std(y)`` and ``bind(operator)``):

* :class:`GaussianNoise`: additive white noise, either **relative** (``level``: ``sigma_b = level *
  ||y_b||_2 / sqrt(size(y_b))`` per sample, relative to the RMS of the sample's measurement, the unit of
  ``ctrobust evaluate --shift noise``) or **absolute** (``sigma`` in the units of ``y``);
* :class:`LogPoissonNoise`: low-dose CT, transmission counts with a photon budget, then the log;
  optional Gaussian read noise on the counts and detector cross-talk (LION's noise model);
* :class:`NoiseChain`: models applied in turn, each drawing from the same per-sample generator.

**The log-Poisson model.** For a noise-free sinogram ``y = A x`` (line integrals in pixel units of the
[0, 1] image, see docs/conventions.md) and ``I0`` photons per detector bin of the unattenuated beam:

``N ~ Poisson(I0 exp(-mu y))``, then detector cross-talk ``N <- (c N[j-1] + N[j] + c N[j+1]) / (1 + 2c)``
across the detector bins (zero outside the detector), then Gaussian read noise ``N <- N + sigma n``
(``sigma`` in counts), and ``y_noisy = -log(max(N, 1) / I0) / mu`` per bin. ``mu`` is the attenuation of
intensity 1 per pixel of path length, so ``mu y`` is the dimensionless attenuation of a ray. The
default scale is LoDoPaB-CT's (Leuschner et al. 2021): intensity 1 is ``mu_max = 81.35858 / m`` (3071
HU, four times water) over a 26 cm field of view, i.e.

``mu = ATTENUATION / N`` with ``ATTENUATION = 81.35858 * 0.26 = 21.153`` (:data:`LODOPAB_ATTENUATION`)

for ``N x N`` images. Images prepared with the ``full`` window (``[-1024, 3071]`` HU on [0, 1]) then have
water at 0.25 exactly as in LoDoPaB, and the central rays of a body-sized phantom keep ~0.2 % of the
photons (``mu y`` up to ~6), the realistic low-dose regime; LoDoPaB's dose is ``I0 = 4096``. LION
(Biguri et al., ``LION.CTtools.ct_utils.sinogram_add_noise``) instead scales each sinogram by its own
maximum (``mu = 1 / max(y)``: the most attenuated ray keeps ``1 / e`` of the photons) and clips
negative line integrals to 0: ``scale="max", clip_negative=True``.

The clamp ``max(N, 1)`` (photon starvation: a bin that counted 0 photons is read as 1) bounds
``y_noisy`` by ``log(I0) / mu``. Noise is drawn from an explicit ``torch.Generator`` only (same seed,
same numbers, on CPU and CUDA: the draw is made on the generator's device and moved).

**One measurement.** :func:`measure` (``y = noise(A x)``) and its second half :func:`apply_noise` give
sample ``s`` (its global index: the dataset index in evaluation, the position in the step's global batch
in training) its own generator seeded from ``(seed, s)`` (:func:`sample_generator`), so the measured
data do not depend on the batch size, the number of samples or the number of processes.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Iterable, Sequence

import numpy as np
import torch

__all__ = ["NoiseModel", "GaussianNoise", "LogPoissonNoise", "NoiseChain", "noise_from_config", "make_noise",
           "measure", "apply_noise", "sample_seed", "sample_generator", "crosstalk",
           "LODOPAB_MU_MAX", "LODOPAB_FOV_M", "LODOPAB_ATTENUATION", "LODOPAB_PHOTONS", "attenuation_per_pixel"]

#: LoDoPaB-CT's attenuation of intensity 1, per metre (3071 HU)
LODOPAB_MU_MAX = 81.35858
#: LoDoPaB-CT's field of view (image side), metres
LODOPAB_FOV_M = 0.26
#: attenuation of intensity 1 over the whole image side, dimensionless (``mu_max * FOV``)
LODOPAB_ATTENUATION = LODOPAB_MU_MAX * LODOPAB_FOV_M
#: LoDoPaB-CT's photons per detector bin (its low-dose simulation)
LODOPAB_PHOTONS = 4096

#: the stream tag of measurement noise in :func:`sample_seed` (kept from ``robustness.measure`` so the
#: evaluation's noisy data are the same numbers as before the single ``measure``)
_MEASUREMENT_STREAM = 4


def attenuation_per_pixel(image_size: int, attenuation: float = LODOPAB_ATTENUATION) -> float:
    """``mu`` for ``N x N`` images: ``attenuation / N`` (attenuation of intensity 1 across the image side)."""
    if isinstance(image_size, bool) or not (isinstance(image_size, (int, np.integer)) and image_size >= 1):
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if not (math.isfinite(attenuation) and attenuation > 0):
        raise ValueError(f"attenuation must be a finite number > 0, got {attenuation!r}")
    return float(attenuation) / int(image_size)


def _finite(name: str, value, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (value <= 0 if positive else value < 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return value


def _check_tensor(y, who: str, batched: bool = True) -> None:
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise TypeError(f"{who} needs a floating-point tensor, got {type(y).__name__}")
    if batched and y.dim() < 2:
        raise ValueError(f"{who} needs a batch of measurements (B, ...), got shape {tuple(y.shape)}")


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` values reshaped to broadcast against ``like`` ``(B, ...)``."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def _rms(y: torch.Tensor) -> torch.Tensor:
    """Per-sample RMS ``||y_b||_2 / sqrt(size(y_b))`` (float64, no gradient), shaped to broadcast."""
    yd = y.detach().double()
    return _per_sample(yd.flatten(1).norm(dim=1) / math.sqrt(yd[0].numel()), yd)


class NoiseModel(abc.ABC):
    """The measurement noise interface: ``noise(y, generator=None) -> y_noisy``.

    ``y`` is a batch ``(B, ...)`` of noise-free measurements (any device, float32 or float64); the result
    has ``y``'s shape, dtype and device. Draws come only from ``generator`` (a fresh CPU generator seeded
    0 without one, never the global RNG), made on the generator's device and moved. The gradient with
    respect to ``y`` is the identity (the draw itself has no gradient).
    """

    @abc.abstractmethod
    def __call__(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...

    @abc.abstractmethod
    def to_config(self) -> dict:
        """A JSON-able description; :func:`noise_from_config` rebuilds the model from it."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line of text for people (results, docs, ``--list``)."""

    @abc.abstractmethod
    def inverse_std(self, y: torch.Tensor) -> torch.Tensor:
        """Per-bin ``1 / std`` of the noise at the measured ``y`` (float64, no gradient, shaped like ``y``)."""

    def bind(self, operator) -> "NoiseModel":
        """This model with the parameters that depend on the operator filled in (default: itself)."""
        return self


@dataclasses.dataclass(frozen=True)
class GaussianNoise(NoiseModel):
    """Additive white Gaussian noise ``y + sigma_b n``, ``n ~ N(0, I)``: give exactly one of

    Parameters
    ----------
    level : float, optional
        Relative level: ``sigma_b = level * ||y_b||_2 / sqrt(size(y_b))``, relative to the RMS of each
        sample's clean measurement (0.01 = 1 %); the level of ``ctrobust evaluate --shift noise``.
    sigma : float, optional
        Absolute standard deviation, in the units of ``y`` (pixel-unit line integrals for CT).

    Examples
    --------
    >>> import torch
    >>> y = torch.ones(2, 1, 3, 4)
    >>> noisy = GaussianNoise(level=0.1)(y, torch.Generator().manual_seed(0))
    >>> tuple(noisy.shape), GaussianNoise(sigma=0.5).describe()
    ((2, 1, 3, 4), 'Gaussian, sigma = 0.5 (units of y)')
    """

    level: float | None = None
    sigma: float | None = None

    def __post_init__(self) -> None:
        if (self.level is None) == (self.sigma is None):
            raise ValueError("GaussianNoise needs exactly one of level (relative to the RMS of y, e.g. 0.01) "
                             "and sigma (absolute, units of y)")
        if self.level is not None:
            object.__setattr__(self, "level", _finite("level", self.level))
        else:
            object.__setattr__(self, "sigma", _finite("sigma", self.sigma))

    def std(self, y: torch.Tensor) -> torch.Tensor:
        """The standard deviation of each sample's noise, float64, shaped to broadcast against ``y``."""
        if self.sigma is not None:
            return torch.full([y.shape[0]] + [1] * (y.dim() - 1), self.sigma, dtype=torch.float64, device=y.device)
        return self.level * _rms(y)

    def __call__(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        from ctrobust.seeding import default_generator

        _check_tensor(y, "GaussianNoise")
        gen = default_generator(generator)
        n = torch.randn(y.shape, generator=gen, dtype=torch.float64, device=gen.device).to(y.device)
        return y + (self.std(y) * n).to(y.dtype)

    def inverse_std(self, y: torch.Tensor) -> torch.Tensor:
        return (1.0 / self.std(y).clamp_min(1e-300)).expand(y.shape).clone()

    def to_config(self) -> dict:
        return {"type": "GaussianNoise", "level": self.level, "sigma": self.sigma}

    def describe(self) -> str:
        if self.sigma is not None:
            return f"Gaussian, sigma = {self.sigma:g} (units of y)"
        return f"Gaussian, {100 * self.level:g} % of the RMS of y"


def crosstalk(counts: torch.Tensor, c: float) -> torch.Tensor:
    """Detector cross-talk across the last axis (bins): ``(c N[j-1] + N[j] + c N[j+1]) / (1 + 2c)``.

    LION's 3-tap kernel (``sinogram_add_noise``): a share ``c / (1 + 2c)`` of each neighbour's signal,
    zero beyond the detector's two edges (so the edge bins read ``(1 + c) / (1 + 2c)`` of a flat signal).
    """
    if c == 0:
        return counts
    padded = torch.nn.functional.pad(counts, (1, 1))
    return (c * padded[..., :-2] + counts + c * padded[..., 2:]) / (1 + 2 * c)


@dataclasses.dataclass(frozen=True)
class LogPoissonNoise(NoiseModel):
    """Low-dose CT noise on sinograms: ``y -> -log(max(N, 1) / I0) / mu``, ``N ~ Poisson(I0 exp(-mu y))``.

    Parameters
    ----------
    photons : float
        ``I0``, photons per detector bin of the unattenuated beam (> 0). LoDoPaB: 4096; LION: 3500 (low
        dose), 1000 (extreme low dose), 10000 (clinical).
    mu : float, optional
        Attenuation of intensity 1 per pixel of path (``> 0``). Give ``mu`` or ``image_size``, or neither:
        then ``mu = attenuation / N`` is taken from the operator's images when :func:`measure` binds the
        model (:meth:`bind`); calling an unbound model directly raises a ``ValueError`` saying what to pass.
    image_size : int, optional
        N: ``mu = attenuation / N`` (:func:`attenuation_per_pixel`).
    attenuation : float
        Attenuation of intensity 1 across the image side (default LoDoPaB's 21.153).
    read_noise : float
        Standard deviation of Gaussian electronic noise added to the counts, in photons (default 0; LION: 5).
    crosstalk : float
        Detector cross-talk ``c`` (:func:`crosstalk`; default 0, LION: 0.05), applied to the counts before
        the read noise.
    scale : {"fixed", "max"}
        ``"fixed"``: ``mu`` as above. ``"max"``: LION's rule, ``mu = 1 / max(y_b)`` per sample (the
        most attenuated ray of each sinogram keeps ``1 / e`` of the photons); no ``mu``/``image_size``.
    clip_negative : bool
        Clip negative noisy line integrals to 0 (LION does; default False).

    The result is ``y + (y_noisy - y).detach()``: the value is the noisy measurement, the gradient with
    respect to ``y`` is the identity (a straight-through estimate; the draw itself has no gradient).

    Examples
    --------
    >>> import torch
    >>> noise = LogPoissonNoise(4096, image_size=64)
    >>> y = torch.full((2, 1, 3, 5), 10.0)
    >>> a = noise(y, generator=torch.Generator().manual_seed(0))
    >>> b = noise(y, generator=torch.Generator().manual_seed(0))
    >>> bool(torch.equal(a, b)), tuple(a.shape)
    (True, (2, 1, 3, 5))
    """

    photons: float
    mu: float | None = None
    _: dataclasses.KW_ONLY
    image_size: int | None = None
    attenuation: float = LODOPAB_ATTENUATION
    read_noise: float = 0.0
    crosstalk: float = 0.0
    scale: str = "fixed"
    clip_negative: bool = False

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen)
        try:
            set_("photons", _finite("photons (I0)", self.photons, positive=True))
        except ValueError as exc:
            raise ValueError(f"{exc}; LoDoPaB's low dose is {LODOPAB_PHOTONS}") from None
        set_("attenuation", _finite("attenuation", self.attenuation, positive=True))
        set_("read_noise", _finite("read_noise (counts)", self.read_noise))
        set_("crosstalk", _finite("crosstalk", self.crosstalk))
        if self.crosstalk >= 0.5:
            raise ValueError(f"crosstalk must be < 0.5 (a share of each neighbour's signal, LION: 0.05), "
                             f"got {self.crosstalk!r}")
        set_("clip_negative", bool(self.clip_negative))
        if self.scale not in ("fixed", "max"):
            raise ValueError(f"scale must be 'fixed' (mu from mu/image_size) or 'max' (LION: mu = 1 / max(y) "
                             f"per sample), got {self.scale!r}")
        if self.scale == "max":
            if self.mu is not None or self.image_size is not None:
                raise ValueError("scale='max' takes mu from each sinogram's maximum: give neither mu nor image_size")
            return
        if self.mu is not None and self.image_size is not None:
            raise ValueError("give at most one of mu (attenuation per pixel) and image_size (mu = attenuation / N)")
        if self.image_size is not None:
            set_("image_size", int(self.image_size) if not isinstance(self.image_size, bool) else self.image_size)
            set_("mu", attenuation_per_pixel(self.image_size, self.attenuation))
            set_("image_size", None)  # recorded through mu; keeps equal models equal
        elif self.mu is not None:
            set_("mu", _finite("mu", self.mu, positive=True))

    @classmethod
    def for_operator(cls, photons: float, operator, **kwargs) -> "LogPoissonNoise":
        """The noise for an operator's images: ``mu`` from the image side N of ``operator.image_shape``."""
        return cls(photons, **kwargs).bind(operator)

    def bind(self, operator) -> "LogPoissonNoise":
        """With ``mu = attenuation / N`` from ``operator.image_shape`` if ``mu`` is not set (else itself)."""
        if self.mu is not None or self.scale == "max":
            return self
        shape = tuple(getattr(operator, "image_shape", ()) or ())
        if len(shape) != 2:
            raise ValueError(f"LogPoissonNoise needs a CT operator with 2-D images to set mu, got image shape {shape}")
        return dataclasses.replace(self, mu=attenuation_per_pixel(int(shape[-1]), self.attenuation))

    def _mu(self, y: torch.Tensor):
        """``mu``: a float, or ``1 / max(y_b)`` per sample (float64, shaped to broadcast) for ``scale="max"``."""
        if self.scale == "max":
            peak = y.detach().double().flatten(1).amax(dim=1)
            if not bool((peak > 0).all()):
                raise ValueError("scale='max' needs every sinogram to have a positive maximum (an empty image "
                                 "attenuates nothing)")
            return _per_sample(1.0 / peak, y)
        if self.mu is None:
            raise ValueError(
                f"LogPoissonNoise({self.photons:g}) has no attenuation scale yet: pass image_size=N (LoDoPaB's "
                f"scale, mu = {LODOPAB_ATTENUATION:.3f} / N) or mu=..., bind it to an operator "
                "(noise.bind(operator), LogPoissonNoise.for_operator), or measure through ctrobust.operators.noise."
                "measure(operator, x, noise), which binds it")
        return self.mu

    def transmission(self, y: torch.Tensor) -> torch.Tensor:
        """The expected counts ``I0 exp(-mu y)`` (float64, no gradient)."""
        return self.photons * torch.exp(-self._mu(y) * y.detach().double())

    def counts(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Detected counts ``N`` (float64, on the generator's device): Poisson, cross-talk, read noise, before
        the clamp and the log."""
        from ctrobust.seeding import default_generator

        gen = default_generator(generator)
        rate = self.transmission(y).to(gen.device)
        n = crosstalk(torch.poisson(rate, generator=gen), self.crosstalk)
        if self.read_noise > 0:
            n = n + self.read_noise * torch.randn(rate.shape, generator=gen, dtype=rate.dtype, device=rate.device)
        return n

    def __call__(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_tensor(y, "LogPoissonNoise", batched=self.scale == "max")  # per-bin noise: any shape
        mu = self._mu(y)
        n = self.counts(y, generator).to(y.device)
        mu = mu.to(y.device) if isinstance(mu, torch.Tensor) else mu
        noisy = -torch.log(n.clamp_min(1.0) / self.photons) / mu
        if self.clip_negative:
            noisy = noisy.clamp_min(0.0)
        return y + (noisy.to(y.dtype) - y.detach())

    def _count_variance(self, rate: torch.Tensor) -> torch.Tensor:
        """Variance of the detected counts at expected counts ``rate`` (Poisson, cross-talk, read noise)."""
        c = self.crosstalk
        return rate * (1 + 2 * c * c) / (1 + 2 * c) ** 2 + self.read_noise ** 2

    def inverse_std(self, y: torch.Tensor) -> torch.Tensor:
        """Per-bin ``1 / std`` of a measured sinogram's noise, ``mu N / std(N)`` at ``N = I0 exp(-mu y)``
        (without cross-talk and read noise ``mu sqrt(I0 exp(-mu y))``; float64, no gradient).

        The statistical weights of penalised weighted least squares in CT (first order: the log of a
        count ``N`` has variance ``var(N) / N^2``), evaluated at the measured ``y`` (its counts are at
        least 1 after the clamp, so the weights are finite and positive). Bins behind much attenuation
        count few photons and are noisy: they get small weights. Shaped like ``y``.
        """
        rate = self.transmission(y).clamp_min(1.0)
        if self.crosstalk == 0 and self.read_noise == 0:
            return self._mu(y) * rate.sqrt()
        return self._mu(y) * rate / self._count_variance(rate).sqrt()

    def relative_level(self, y: torch.Tensor) -> torch.Tensor:
        """Expected ``||y_noisy - y||_2 / ||y||_2`` per sample (first order: ``var(y_noisy) = var(N) / (mu N)^2``)."""
        rate = self.transmission(y).clamp_min(1.0)
        var = self._count_variance(rate) / (self._mu(y) * rate) ** 2
        return var.flatten(1).sum(1).sqrt() / y.detach().double().flatten(1).norm(dim=1).clamp_min(1e-300)

    def to_config(self) -> dict:
        return {"type": "LogPoissonNoise", **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                                               if f.name != "_" and f.name != "image_size"}}

    def describe(self) -> str:
        if self.scale == "max":
            scale = "mu = 1 / max(y) per sample (LION)"
        elif self.mu is None:
            scale = f"mu = {self.attenuation:.5g} / N (N from the operator)"
        else:
            scale = f"mu = {self.mu:.6g} per pixel"
        parts = [f"log-Poisson, I0 = {self.photons:g} photons per bin, {scale}"]
        if self.crosstalk:
            parts.append(f"detector cross-talk {100 * self.crosstalk:g} % to each neighbour")
        if self.read_noise:
            parts.append(f"Gaussian read noise sigma {self.read_noise:g} counts")
        if self.clip_negative:
            parts.append("negative line integrals clipped to 0")
        return ", ".join(parts)

    def __repr__(self) -> str:
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        extra = "".join(f", {k}={getattr(self, k)!r}" for k in ("read_noise", "crosstalk", "scale", "clip_negative")
                        if getattr(self, k) != defaults[k])
        mu = "" if self.mu is None else f", mu={self.mu:.6g}"
        return f"LogPoissonNoise(photons={self.photons:g}{mu}{extra})"


@dataclasses.dataclass(frozen=True)
class NoiseChain(NoiseModel):
    """Noise models applied in turn, each drawing from the same generator (e.g. dose, then extra Gaussian)."""

    models: tuple

    def __post_init__(self) -> None:
        models = tuple(self.models)
        if not models or not all(isinstance(m, NoiseModel) for m in models):
            raise ValueError(f"NoiseChain needs one or more NoiseModel instances, got {self.models!r}")
        object.__setattr__(self, "models", models)

    def __call__(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        from ctrobust.seeding import default_generator

        gen = default_generator(generator)
        for model in self.models:
            y = model(y, gen)
        return y

    def bind(self, operator) -> "NoiseChain":
        return NoiseChain(tuple(m.bind(operator) for m in self.models))

    def inverse_std(self, y: torch.Tensor) -> torch.Tensor:
        """Independent stages: variances add (each evaluated at ``y``)."""
        return sum(m.inverse_std(y).pow(-2) for m in self.models).rsqrt()

    def to_config(self) -> dict:
        return {"type": "NoiseChain", "models": [m.to_config() for m in self.models]}

    def describe(self) -> str:
        return "; then ".join(m.describe() for m in self.models)


#: ``type`` of :meth:`NoiseModel.to_config` -> class
NOISE_MODELS = {"GaussianNoise": GaussianNoise, "LogPoissonNoise": LogPoissonNoise, "NoiseChain": NoiseChain}


def noise_from_config(config: dict | None) -> NoiseModel | None:
    """The model :meth:`NoiseModel.to_config` described (None for None)."""
    if config is None:
        return None
    data = dict(config)
    kind = data.pop("type", None)
    if kind not in NOISE_MODELS:
        raise ValueError(f"unknown noise model type {kind!r}; known: {', '.join(NOISE_MODELS)}")
    if kind == "NoiseChain":
        return NoiseChain(tuple(noise_from_config(m) for m in data["models"]))
    return NOISE_MODELS[kind](**data)


def make_noise(photons: float | None = None, *, read_noise: float = 0.0, crosstalk: float = 0.0,
               level: float = 0.0, operator=None) -> NoiseModel | None:
    """The measurement noise of the command-line options, built in one place (None: noise-free).

    ``photons`` (``--photons``): :class:`LogPoissonNoise` with LoDoPaB's attenuation scale (``mu`` from
    ``operator``'s image size when given), ``read_noise`` counts and ``crosstalk``; ``level``: relative
    :class:`GaussianNoise` on top. ``read_noise``/``crosstalk`` without ``photons`` is an error.
    """
    models: list[NoiseModel] = []
    if photons is not None:
        models.append(LogPoissonNoise(photons, read_noise=read_noise, crosstalk=crosstalk))
    elif read_noise or crosstalk:
        raise ValueError("read noise and detector cross-talk act on photon counts: give photons (I0) too")
    if level:
        models.append(GaussianNoise(level=level))
    if not models:
        return None
    model = models[0] if len(models) == 1 else NoiseChain(tuple(models))
    return model.bind(operator) if operator is not None else model


# -- the one measurement ---------------------------------------------------------------------------------
def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index``'s measurement noise: a hash of ``(seed, index)`` (numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(seed), _MEASUREMENT_STREAM, int(index)]).generate_state(1)[0])


def sample_generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator seeded :func:`sample_seed` ``(seed, index)``."""
    return torch.Generator().manual_seed(sample_seed(seed, index))


def _indices(n: int, indices: Iterable[int] | None) -> list[int]:
    idx = list(range(n)) if indices is None else [int(i) for i in indices]
    if len(idx) != n:
        raise ValueError(f"indices: {len(idx)} given for a batch of {n} samples")
    if any(i < 0 for i in idx):
        raise ValueError("indices must be >= 0 (the samples' global positions)")
    return idx


@torch.no_grad()
def apply_noise(y: torch.Tensor, noise: NoiseModel | None, *, seed: int = 0,
                indices: Sequence[int] | None = None, operator=None) -> torch.Tensor:
    """``noise(y)`` with per-sample seeding: sample ``b`` draws from :func:`sample_generator` ``(seed,
    indices[b])`` (``indices`` default ``0..B-1``); ``y`` itself without noise. No gradient.

    ``operator`` binds operator-dependent parameters (:meth:`NoiseModel.bind`, e.g. log-Poisson's ``mu``).
    """
    if noise is None:
        return y
    if not callable(noise):
        raise TypeError(f"noise must be a noise model (e.g. LogPoissonNoise, GaussianNoise) or None, got {noise!r}")
    if operator is not None and isinstance(noise, NoiseModel):
        noise = noise.bind(operator)
    idx = _indices(y.shape[0], indices)
    return torch.cat([noise(y[b:b + 1], generator=sample_generator(seed, s)) for b, s in enumerate(idx)]).detach()


@torch.no_grad()
def measure(operator, x: torch.Tensor, noise: NoiseModel | None = None, seed: int = 0,
            indices: Sequence[int] | None = None) -> torch.Tensor:
    """The measured data ``y = noise(A x)`` of a batch ``x`` in the operator's domain (no gradient).

    Sample ``b``'s noise comes from its own CPU generator seeded from ``(seed, indices[b])``
    (:func:`apply_noise`; ``indices`` are the samples' global indices, default ``0..B-1``), so sample 7's
    measurement is the same in a batch of 1 and of 8. Without ``noise``: ``A x``.
    """
    return apply_noise(operator(x), noise, seed=seed, indices=indices, operator=operator)
