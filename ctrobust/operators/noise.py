"""A CT measurement noise model: transmission counts with a photon budget, then the log (low-dose CT).

For a noise-free sinogram ``y = A x`` (line integrals in pixel units of the [0, 1] image, see
docs/conventions.md) and ``I0`` photons per detector bin of the unattenuated beam:

``N ~ Poisson(I0 exp(-mu y))`` (+ optional Gaussian read noise of ``read_noise`` photons),
``y_noisy = -log(max(N, 1) / I0) / mu``

per bin, independently. ``mu`` is the attenuation of intensity 1 per pixel of path length, so ``mu y``
is the dimensionless attenuation of a ray. The default scale is LoDoPaB-CT's (Leuschner et al. 2021):
intensity 1 is ``mu_max = 81.35858 / m`` (3071 HU, four times water) over a 26 cm field of view, i.e.

``mu = ATTENUATION / N`` with ``ATTENUATION = 81.35858 * 0.26 = 21.153`` (:data:`LODOPAB_ATTENUATION`)

for ``N x N`` images. Images prepared with the ``full`` window (``[-1024, 3071]`` HU on [0, 1]) then have
water at 0.25 exactly as in LoDoPaB, and the central rays of a body-sized phantom keep ~0.2 % of the
photons (``mu y`` up to ~6), the realistic low-dose regime; LoDoPaB's dose is ``I0 = 4096``.

The clamp ``max(N, 1)`` (photon starvation: a bin that counted 0 photons is read as 1) bounds
``y_noisy`` by ``log(I0) / mu``. The noise is drawn from an explicit ``torch.Generator`` only (same seed,
same numbers, on CPU and CUDA: the draw is made on the generator's device and moved).
"""

from __future__ import annotations

import math

import torch

__all__ = ["LogPoissonNoise", "LODOPAB_MU_MAX", "LODOPAB_FOV_M", "LODOPAB_ATTENUATION", "LODOPAB_PHOTONS",
           "attenuation_per_pixel"]

#: LoDoPaB-CT's attenuation of intensity 1, per metre (3071 HU)
LODOPAB_MU_MAX = 81.35858
#: LoDoPaB-CT's field of view (image side), metres
LODOPAB_FOV_M = 0.26
#: attenuation of intensity 1 over the whole image side, dimensionless (``mu_max * FOV``)
LODOPAB_ATTENUATION = LODOPAB_MU_MAX * LODOPAB_FOV_M
#: LoDoPaB-CT's photons per detector bin (its low-dose simulation)
LODOPAB_PHOTONS = 4096


def attenuation_per_pixel(image_size: int, attenuation: float = LODOPAB_ATTENUATION) -> float:
    """``mu`` for ``N x N`` images: ``attenuation / N`` (attenuation of intensity 1 across the image side)."""
    if not (isinstance(image_size, int) and image_size >= 1):
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if not (math.isfinite(attenuation) and attenuation > 0):
        raise ValueError(f"attenuation must be a finite number > 0, got {attenuation!r}")
    return float(attenuation) / image_size


class LogPoissonNoise:
    """Low-dose CT noise on sinograms: ``y -> -log(max(N, 1) / I0) / mu``, ``N ~ Poisson(I0 exp(-mu y))``.

    Parameters
    ----------
    photons : float
        ``I0``, photons per detector bin of the unattenuated beam (> 0). LoDoPaB: 4096.
    mu : float, optional
        Attenuation of intensity 1 per pixel of path (``> 0``). Give ``mu`` or ``image_size``.
    image_size : int, optional
        N: ``mu = attenuation / N`` (:func:`attenuation_per_pixel`).
    attenuation : float
        With ``image_size``: attenuation of intensity 1 across the image side (default LoDoPaB's 21.153).
    read_noise : float
        Standard deviation of Gaussian electronic noise added to the counts, in photons (default 0).

    Calling ``noise(y, generator=None)`` on sinograms ``(B, 1, A, D)`` (any shape, any device, float32 or
    float64) returns the noisy sinogram in ``y``'s dtype and device. Without a generator a fresh CPU
    generator seeded 0 is used (:func:`ctrobust.seeding.default_generator`). The result is
    ``y + (y_noisy - y).detach()``: the value is the noisy measurement, the gradient with respect to ``y``
    is the identity (a straight-through estimate; the draw itself has no gradient).

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

    def __init__(self, photons: float, mu: float | None = None, *, image_size: int | None = None,
                 attenuation: float = LODOPAB_ATTENUATION, read_noise: float = 0.0):
        photons = float(photons)
        if not (math.isfinite(photons) and photons > 0):
            raise ValueError(f"photons (I0) must be a finite number > 0, got {photons!r}")
        if (mu is None) == (image_size is None):
            raise ValueError("give exactly one of mu (attenuation per pixel) and image_size")
        mu = attenuation_per_pixel(int(image_size), attenuation) if mu is None else float(mu)
        if not (math.isfinite(mu) and mu > 0):
            raise ValueError(f"mu must be a finite number > 0, got {mu!r}")
        read_noise = float(read_noise)
        if not (math.isfinite(read_noise) and read_noise >= 0):
            raise ValueError(f"read_noise must be a finite number >= 0, got {read_noise!r}")
        self.photons, self.mu, self.read_noise = photons, mu, read_noise

    @classmethod
    def for_operator(cls, photons: float, operator, **kwargs) -> "LogPoissonNoise":
        """The noise for an operator's images: ``mu`` from the image side N of ``operator.image_shape``."""
        shape = tuple(getattr(operator, "image_shape", ()) or ())
        if len(shape) != 2:
            raise ValueError(f"LogPoissonNoise needs a CT operator with 2-D images, got image shape {shape}")
        return cls(photons, image_size=int(shape[-1]), **kwargs)

    def transmission(self, y: torch.Tensor) -> torch.Tensor:
        """The expected counts ``I0 exp(-mu y)`` (float64, no gradient)."""
        return self.photons * torch.exp(-self.mu * y.detach().double())

    def counts(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Detected counts ``N`` (float64, on the generator's device), before the clamp and the log."""
        from ctrobust.seeding import default_generator

        gen = default_generator(generator)
        rate = self.transmission(y).to(gen.device)
        n = torch.poisson(rate, generator=gen)
        if self.read_noise > 0:
            n = n + self.read_noise * torch.randn(rate.shape, generator=gen, dtype=rate.dtype, device=rate.device)
        return n

    def __call__(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not isinstance(y, torch.Tensor) or not y.is_floating_point():
            raise TypeError(f"LogPoissonNoise needs a floating-point tensor, got {type(y).__name__}")
        n = self.counts(y, generator).to(y.device)
        noisy = -torch.log(n.clamp_min(1.0) / self.photons) / self.mu
        return y + (noisy.to(y.dtype) - y.detach())

    def inverse_std(self, y: torch.Tensor) -> torch.Tensor:
        """Per-bin ``1 / std`` of a measured sinogram's noise, ``mu sqrt(I0 exp(-mu y))`` (float64, no gradient).

        The statistical weights of penalised weighted least squares in CT (first order: the log of a
        Poisson count ``N`` has variance ``1 / N``), evaluated at the measured ``y`` (its counts are at
        least 1 after the clamp, so the weights are finite and positive). Bins behind much attenuation
        count few photons and are noisy: they get small weights. Shaped like ``y``.
        """
        return self.mu * self.transmission(y).clamp_min(1.0).sqrt()

    def relative_level(self, y: torch.Tensor) -> torch.Tensor:
        """Expected ``||y_noisy - y||_2 / ||y||_2`` per sample (first order: var(y_noisy) = 1 / (mu^2 I0 e^{-mu y}))."""
        var = 1.0 / (self.mu ** 2 * self.transmission(y).clamp_min(1.0))
        return var.flatten(1).sum(1).sqrt() / y.detach().double().flatten(1).norm(dim=1).clamp_min(1e-300)

    def to_config(self) -> dict:
        return {"type": "LogPoissonNoise", "photons": self.photons, "mu": self.mu, "read_noise": self.read_noise}

    def __repr__(self) -> str:
        extra = f", read_noise={self.read_noise:g}" if self.read_noise else ""
        return f"LogPoissonNoise(photons={self.photons:g}, mu={self.mu:.6g}{extra})"
