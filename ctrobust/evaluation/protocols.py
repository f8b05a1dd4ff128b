"""Named evaluation protocols: frozen values that fix a CT setting of the literature, its dose, data, attack
budget and metrics, so two labs can see they ran the same thing (:meth:`Protocol.fingerprint`).

A protocol's geometry is stored as its source states it, **in millimetres** (:class:`ScanGeometry`);
:func:`to_pixels` is the one place that converts it to ctrobust's pixel units (the image's pixel side is
1, docs/conventions.md), giving a :class:`~ctrobust.operators.geometry.ParallelBeam2D` or
:class:`~ctrobust.operators.geometry.FanBeam2D`. :meth:`Protocol.at_size` rescales a protocol to ``N x N``
images (the rule is in its docstring and docs/protocols.md). :data:`PROTOCOLS` lists them by name;
:meth:`Protocol.card` is the text of docs/protocols.md and of ``ctrobust benchmark --list``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

from ctrobust.operators.noise import LODOPAB_MU_MAX, LogPoissonNoise, NoiseModel, noise_from_config

__all__ = ["ScanGeometry", "DataSplit", "AttackBudget", "Protocol", "PROTOCOLS", "get_protocol", "to_pixels",
           "protocol_cards"]

#: ctrobust's parallel-beam bins are one pixel wide: a source's bin width may differ from the pixel by this
#: share at most (LoDoPaB: 0.2 %)
PARALLEL_BIN_TOLERANCE = 0.05

PAPER_EPS_GRID = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04)


def _positive(name: str, value, kind=float):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if kind is int:
        if int(value) != value:
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


@dataclasses.dataclass(frozen=True)
class ScanGeometry:
    """A 2-D CT scan in the source's units (millimetres, radians).

    Attributes
    ----------
    beam : {"parallel", "fan"}
        Fan: a point source and a flat detector (ASTRA ``fanflat``).
    image_size : int
        N, image side in pixels.
    fov_mm : float
        Image side (field of view) in mm; the pixel side is ``fov_mm / N``.
    n_views, angle_range : int, float
        Views uniformly on ``[0, angle_range)`` radians.
    n_bins, bin_width_mm : int, float
        Detector bins and their width on the detector, mm (fan: at the detector, not at the axis).
    source_origin_mm, source_detector_mm : float or None
        Fan beam: source - rotation axis and source - detector distances, mm (None for parallel beam).
    """

    beam: str
    image_size: int
    fov_mm: float
    n_views: int
    angle_range: float
    n_bins: int
    bin_width_mm: float
    source_origin_mm: float | None = None
    source_detector_mm: float | None = None

    def __post_init__(self) -> None:
        if self.beam not in ("parallel", "fan"):
            raise ValueError(f"beam must be 'parallel' or 'fan', got {self.beam!r}")
        for name in ("image_size", "n_views", "n_bins"):
            object.__setattr__(self, name, _positive(name, getattr(self, name), int))
        for name in ("fov_mm", "angle_range", "bin_width_mm"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        if self.angle_range > 2 * math.pi + 1e-12:
            raise ValueError(f"angle_range must be at most 2 pi radians, got {self.angle_range!r}")
        fan = (self.source_origin_mm, self.source_detector_mm)
        if self.beam == "parallel":
            if fan != (None, None):
                raise ValueError("a parallel-beam scan has no source distances: leave source_origin_mm and "
                                 "source_detector_mm unset")
            return
        if None in fan:
            raise ValueError("a fan-beam scan needs source_origin_mm and source_detector_mm")
        so, sd = (_positive(n, v) for n, v in zip(("source_origin_mm", "source_detector_mm"), fan))
        if sd <= so:
            raise ValueError(f"source_detector_mm ({sd}) must exceed source_origin_mm ({so}): the detector lies "
                             "behind the rotation axis")
        if so <= self.fov_mm / math.sqrt(2):
            raise ValueError(f"source_origin_mm ({so}) must exceed the field of view's half diagonal "
                             f"({self.fov_mm / math.sqrt(2):.1f} mm)")
        object.__setattr__(self, "source_origin_mm", so)
        object.__setattr__(self, "source_detector_mm", sd)

    @property
    def pixel_mm(self) -> float:
        """The pixel side in mm, ``fov_mm / N``."""
        return self.fov_mm / self.image_size

    @property
    def detector_width_mm(self) -> float:
        """The detector's physical width, ``n_bins * bin_width_mm``."""
        return self.n_bins * self.bin_width_mm

    def at_size(self, n: int) -> "ScanGeometry":
        """The same scan for ``n x n`` images: field of view, detector width, distances and views kept;
        the number of bins scales with ``n`` (rounded, at least 1) and the bins widen to keep the width."""
        n = _positive("image size", n, int)
        bins = max(1, round(self.n_bins * n / self.image_size))
        return dataclasses.replace(self, image_size=n, n_bins=bins, bin_width_mm=self.detector_width_mm / bins)


def to_pixels(scan: ScanGeometry):
    """The scan in ctrobust's units: the pixel (``fov_mm / N``) is the unit of length.

    - fan beam: ``FanBeam2D(N, n_views, n_bins, source_origin = source_origin_mm / pixel, origin_detector
      = (source_detector_mm - source_origin_mm) / pixel, detector_spacing = bin_width_mm / pixel,
      angle_range)``, exact;
    - parallel beam: ``ParallelBeam2D(N, n_views, n_bins, angle_range)``, whose bins are one pixel wide:
      the source's bin width is replaced by the pixel (refused when they differ by more than
      :data:`PARALLEL_BIN_TOLERANCE`, 5 %).
    """
    from ctrobust.operators.geometry import FanBeam2D, ParallelBeam2D

    px = scan.pixel_mm
    if scan.beam == "parallel":
        ratio = scan.bin_width_mm / px
        if abs(ratio - 1) > PARALLEL_BIN_TOLERANCE:
            raise ValueError(f"parallel-beam bins of {scan.bin_width_mm:.4g} mm are {ratio:.3f} pixels of "
                             f"{px:.4g} mm; ctrobust's parallel-beam bins are one pixel wide (tolerance "
                             f"{PARALLEL_BIN_TOLERANCE:.0%}): use a fan beam or bins of the pixel's width")
        return ParallelBeam2D(scan.image_size, scan.n_views, scan.n_bins, angle_range=scan.angle_range)
    return FanBeam2D(scan.image_size, scan.n_views, scan.n_bins, source_origin=scan.source_origin_mm / px,
                     origin_detector=(scan.source_detector_mm - scan.source_origin_mm) / px,
                     detector_spacing=scan.bin_width_mm / px, angle_range=scan.angle_range)


@dataclasses.dataclass(frozen=True)
class DataSplit:
    """Which images train, validate and test: a data set name (``lodopab``, ``lidc-idri``, ``dicom``,
    ``phantoms``), slice counts (None: all of the part) and how the split is made."""

    dataset: str
    train: int | None
    val: int | None
    test: int | None
    rule: str


@dataclasses.dataclass(frozen=True)
class AttackBudget:
    """The attack that counts as verified: ``ctrobust attack --attack R --steps S --restarts K --verify V``
    (the re-check: ``verify_steps`` x ``verify_restarts`` on ``verify`` samples), eps relative to ``||y||``."""

    rule: str = "apgd"
    steps: int = 300
    restarts: int = 2
    verify: int = 8
    verify_steps: int = 300
    verify_restarts: int = 5
    target: str = "truth"

    def flags(self) -> str:
        return (f"--attack {self.rule} --steps {self.steps} --restarts {self.restarts} --verify {self.verify} "
                f"--verify-steps {self.verify_steps} --verify-restarts {self.verify_restarts} --target {self.target}")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A named CT robustness protocol: geometry (mm), noise and dose, data, eps grid, attack budget, metrics.

    ``noise`` is a :class:`~ctrobust.operators.noise.NoiseModel` (for the LoDoPaB attenuation scale with
    ``mu`` left to the operator, so :meth:`at_size` needs no change of it). ``approximations`` say where
    ctrobust's simulation departs from the source and why.
    """

    name: str
    title: str
    source: str
    scan: ScanGeometry
    noise: NoiseModel | None
    dose_note: str
    data: DataSplit
    eps_grid: tuple = PAPER_EPS_GRID
    attack: AttackBudget = AttackBudget()
    metrics: tuple = ("relative_error", "psnr", "ssim")
    approximations: tuple = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps_grid", tuple(float(e) for e in self.eps_grid))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "approximations", tuple(self.approximations))
        if not self.eps_grid or any(not (math.isfinite(e) and e >= 0) for e in self.eps_grid):
            raise ValueError(f"eps_grid must hold finite values >= 0, got {self.eps_grid!r}")
        if self.noise is not None and not isinstance(self.noise, NoiseModel):
            raise ValueError(f"noise must be a NoiseModel or None, got {self.noise!r}")

    # -- derived values -------------------------------------------------------------------------------
    def geometry(self):
        """The scan in pixel units (:func:`to_pixels`)."""
        return to_pixels(self.scan)

    def operator(self, backend: str = "auto"):
        """The :class:`~ctrobust.operators.radon.RadonTransform` of the scan."""
        from ctrobust.operators.radon import RadonTransform

        return RadonTransform(self.geometry(), backend=backend)

    def at_size(self, n: int) -> "Protocol":
        """The protocol for ``n x n`` images (``--size N``).

        Kept: the field of view (the pixel becomes ``fov_mm / n``), the detector's physical width, the
        source distances in mm (so in pixels they scale with ``n``), the views and angular range (they
        define the protocol: sparse view stays 50 views), the photons per bin ``I0`` (the source's dose
        number) and the attenuation scale per mm (``mu`` per pixel follows ``n``). Scaled: the number of
        bins, with ``n`` (rounded), so a bin keeps its width in pixels; its width in mm grows as ``N0 / n``.
        """
        return dataclasses.replace(self, scan=self.scan.at_size(n))

    def to_config(self) -> dict:
        """Every field, JSON-able: the canonical card that :meth:`fingerprint` hashes."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "noise":
                value = None if value is None else value.to_config()
            elif dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_config(cls, config: dict) -> "Protocol":
        data = dict(config)
        data["scan"] = ScanGeometry(**data["scan"])
        data["data"] = DataSplit(**data["data"])
        data["attack"] = AttackBudget(**data["attack"])
        data["noise"] = noise_from_config(data["noise"])
        return cls(**data)

    def fingerprint(self) -> str:
        """A short hash (16 hex digits) of the canonical JSON card: changes when any field changes."""
        text = json.dumps(self.to_config(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def summary(self) -> str:
        """One line: name, title, size, views, dose."""
        s = self.scan
        dose = f"I0 = {self.noise.photons:g}" if hasattr(self.noise, "photons") else (
            "noise-free" if self.noise is None else self.noise.describe())
        return f"{self.name}: {s.beam} beam, {s.image_size} px, {s.n_views} views, {dose} [{self.fingerprint()}]"

    def card(self) -> str:
        """The protocol's card (Markdown): docs/protocols.md and ``ctrobust benchmark --list`` print it."""
        s, g = self.scan, self.geometry()
        px = s.pixel_mm
        lines = [f"### `{self.name}`: {self.title}", "",
                 f"- source: {self.source}",
                 f"- scan: {s.beam} beam, {s.n_views} views on [0, {_angle(s.angle_range)})",
                 f"- image: {s.image_size} x {s.image_size} px of {px:.4g} mm (field of view {s.fov_mm:g} mm)",
                 f"- detector: {s.n_bins} bins of {s.bin_width_mm:.4g} mm = {s.detector_width_mm:.4g} mm"]
        if s.beam == "fan":
            lines.append(f"- distances: source-origin {s.source_origin_mm:g} mm, source-detector "
                         f"{s.source_detector_mm:g} mm (magnification {g.magnification:.4g})")
            lines.append(f"- in pixels: source_origin {g.source_origin:.2f}, origin_detector "
                         f"{g.origin_detector:.2f}, detector_spacing {g.detector_spacing:.4f} "
                         f"(`FanBeam2D`, sinogram {g.sinogram_shape[0]} x {g.sinogram_shape[1]})")
        else:
            lines.append(f"- in pixels: bins of 1 px (`ParallelBeam2D`, sinogram {g.sinogram_shape[0]} x "
                         f"{g.sinogram_shape[1]}; the source's bin is {s.bin_width_mm / px:.4f} px)")
        lines += [f"- noise: {self.noise.describe() if self.noise is not None else 'none (y = A x)'}",
                  f"- dose: {self.dose_note}",
                  f"- data: {self.data.dataset}, train / val / test {_count(self.data.train)} / "
                  f"{_count(self.data.val)} / {_count(self.data.test)} slices; {self.data.rule}",
                  f"- eps grid (relative to ||y||): {', '.join(f'{e:g}' for e in self.eps_grid)}",
                  f"- attack (verified budget): `{self.attack.flags()}`",
                  f"- metrics: {', '.join(self.metrics)}"]
        lines += [f"- approximated: {a}" for a in self.approximations]
        lines.append(f"- fingerprint: `{self.fingerprint()}`")
        return "\n".join(lines)


def _angle(a: float) -> str:
    for k, label in ((1, "pi"), (2, "2 pi"), (1 / 3, "pi / 3")):
        if abs(a - k * math.pi) < 1e-12:
            return label
    return f"{a:.6g}"


def _count(n) -> str:
    return "all" if n is None else str(n)


# -- the protocols ------------------------------------------------------------------------------------------
def _lodopab_scale_noise(photons: float, fov_mm: float) -> LogPoissonNoise:
    """Log-Poisson noise on LoDoPaB's attenuation scale (intensity 1 = 81.35858 / m) over ``fov_mm``."""
    return LogPoissonNoise(photons, attenuation=LODOPAB_MU_MAX * fov_mm / 1000.0)


def _lion_noise(photons: float) -> LogPoissonNoise:
    """LION's ``sinogram_add_noise``: I0, read noise sigma 5 counts, 5 % cross-talk, max scaling, clip at 0."""
    return LogPoissonNoise(photons, read_noise=5.0, crosstalk=0.05, scale="max", clip_negative=True)


_LION_SOURCE = ("LION (Biguri et al., github.com/CambridgeCIA/LION), LION/experiments/ct_experiments.py "
                "`{cls}` with `ct_geometry.Geometry.{geo}()` and `ct_utils.sinogram_add_noise`")
_LION_DATA = DataSplit("lidc-idri", None, None, None,
                       "LION's LIDC-IDRI loader: patients in order, 80 % train / 10 % validation / 10 % test, at "
                       "most 5 slices per patient, half of them with nodules (prepare the slices with "
                       "`ctrobust prepare-dicom`)")
_LION_APPROX = (
    "LION scales each sinogram by its maximum (mu = 1 / max y); ctrobust does the same (`scale=\"max\"`), so "
    "the image's intensity scale (LION: attenuation from HU, ctrobust: [0, 1]) does not change the noise",
    "a count <= 0 is read as 1 photon (LION: 1e-6); never reached at these doses (counts stay above I0 / e)",
    "projections by ASTRA's fanflat strip model at the image's resolution (LION: tomosipo, the same geometry)",
)


def _lion_scan(n_views: int = 360, angle_range: float = 2 * math.pi) -> ScanGeometry:
    return ScanGeometry("fan", 512, 300.0, n_views, angle_range, 900, 1.0, source_origin_mm=575.0,
                        source_detector_mm=1050.0)


#: LoDoPaB-CT's detector: 513 bins over ODL's default width, the diameter of the circle around the 26 cm
#: square domain (``2 sqrt(2) 130 mm``)
LODOPAB_BIN_MM = 2 * math.sqrt(2) * 130.0 / 513

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol(
        name="raj2020",
        title="the seed paper's CT setting (parallel beam, 143 views, low dose)",
        source="Raj, Bresler & Li, Improving robustness of deep-learning-based image reconstruction, ICML 2020 "
               "(CT experiment: FBPConvNet, 512 px, 143 parallel-beam views on [0, pi))",
        scan=ScanGeometry("parallel", 512, 260.0, 143, math.pi, 725, 260.0 / 512),
        noise=_lodopab_scale_noise(4096, 260.0),
        dose_note="I0 = 4096 photons per bin on LoDoPaB's attenuation scale: the paper states no photon count, "
                  "LoDoPaB's low dose is the public low-dose CT benchmark's and ctrobust's default "
                  "(experiments/ct_143views), about 4 % relative noise on ||A x|| at 64 px (docs/robustness.md)",
        data=DataSplit("dicom", 884, 0, 221, "the paper's 884 training / 221 test clinical slices (prepare them "
                       "with `ctrobust prepare-dicom`; patient-disjoint); built-in phantoms for a quick run"),
        approximations=(
            "the paper gives no field of view: 260 mm, the field of view of ctrobust's attenuation scale "
            "(LoDoPaB), so water at intensity 0.25 attenuates as in a 26 cm body",
            "725 bins of one pixel (ceil(sqrt(2) N), every ray through the image; the paper gives no count)",
        )),
    Protocol(
        name="lion-low-dose",
        title="LION's low dose (fan beam, 360 views, I0 = 3500)",
        source=_LION_SOURCE.format(cls="LowDoseCTRecon", geo="default_parameters"),
        scan=_lion_scan(),
        noise=_lion_noise(3500),
        dose_note="I0 = 3500 photons per bin (LION's value; its clinical dose is 10000), Gaussian read noise "
                  "sigma 5 counts, 5 % detector cross-talk to each neighbour",
        data=_LION_DATA, approximations=_LION_APPROX),
    Protocol(
        name="lion-extreme-low-dose",
        title="LION's extreme low dose (fan beam, 360 views, I0 = 1000)",
        source=_LION_SOURCE.format(cls="ExtremeLowDoseCTRecon", geo="default_parameters"),
        scan=_lion_scan(),
        noise=_lion_noise(1000),
        dose_note="I0 = 1000 photons per bin, read noise sigma 5 counts, 5 % cross-talk (LION's values)",
        data=_LION_DATA, approximations=_LION_APPROX),
    Protocol(
        name="lion-sparse-view",
        title="LION's sparse view (fan beam, 50 views, clinical dose I0 = 10000)",
        source=_LION_SOURCE.format(cls="SparseAngleCTRecon", geo="sparse_view_parameters"),
        scan=_lion_scan(50),
        noise=_lion_noise(10000),
        dose_note="I0 = 10000 photons per bin (LION's clinical dose), read noise sigma 5 counts, 5 % cross-talk",
        data=_LION_DATA, approximations=_LION_APPROX),
    Protocol(
        name="lion-limited-angle",
        title="LION's limited angle (fan beam, 60 views on [0, pi / 3), I0 = 10000)",
        source=_LION_SOURCE.format(cls="LimitedAngleCTRecon", geo="sparse_angle_parameters"),
        scan=_lion_scan(60, math.pi / 3),
        noise=_lion_noise(10000),
        dose_note="I0 = 10000 photons per bin (LION's clinical dose), read noise sigma 5 counts, 5 % cross-talk",
        data=_LION_DATA,
        approximations=_LION_APPROX + ("FBP needs a short scan (pi + 2 x fan angle): on 60 degrees it is only a "
                                       "baseline, as in LION",)),
    Protocol(
        name="lodopab",
        title="LoDoPaB-CT (parallel beam, 362 px, 1000 views, 513 bins, I0 = 4096)",
        source="Leuschner, Schmidt, Otero Baguer & Maass, LoDoPaB-CT, Scientific Data 8:109 (2021)",
        scan=ScanGeometry("parallel", 362, 260.0, 1000, math.pi, 513, LODOPAB_BIN_MM),
        noise=_lodopab_scale_noise(4096, 260.0),
        dose_note="I0 = 4096 photons per bin, attenuation of intensity 1 = 81.35858 / m (LoDoPaB's)",
        data=DataSplit("lodopab", None, None, None, "LoDoPaB's own patient split (35820 / 3522 / 3553 slices; "
                       "`python data_prep/lodopab.py` keeps it, docs/data.md)"),
        approximations=(
            "LoDoPaB simulates on a 1000 x 1000 grid and bins of 0.7168 mm; ctrobust projects the 362 px "
            "image with bins of one pixel (0.7182 mm, 0.2 % wider): a mild inverse crime",
            "LoDoPaB's angles are at (i + 1/2) pi / 1000 (ODL), ctrobust's at i pi / 1000",
            "a count of 0 is read as 1 photon (ctrobust's floor; LoDoPaB's own floor is not checked here)",
        )),
)}


def get_protocol(name: str, size: int | None = None) -> Protocol:
    """The protocol ``name`` (of :data:`PROTOCOLS`), at ``size`` px if given (:meth:`Protocol.at_size`).

    Examples
    --------
    >>> p = get_protocol("lion-low-dose", size=128)
    >>> p.scan.pixel_mm, p.scan.n_bins, round(p.geometry().source_origin, 2), p.noise.photons
    (2.34375, 225, 245.33, 3500.0)
    """
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    p = PROTOCOLS[name]
    return p if size is None else p.at_size(size)


def protocol_cards() -> str:
    """All cards, separated by blank lines (the body of docs/protocols.md's card section)."""
    return "\n\n".join(p.card() for p in PROTOCOLS.values())
