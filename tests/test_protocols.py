"""Named protocols (ctrobust.evaluation.protocols): each one's numbers against its source, hand-computed; the
mm -> pixel conversion; the fingerprint; at_size; the cards in docs/protocols.md."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from ctrobust.evaluation.protocols import PROTOCOLS, Protocol, ScanGeometry, get_protocol, to_pixels
from ctrobust.operators.geometry import FanBeam2D, ParallelBeam2D

DOCS = Path(__file__).resolve().parents[1] / "docs" / "protocols.md"


def test_the_seed_papers_setting():
    p = PROTOCOLS["raj2020"]
    g = p.geometry()
    assert isinstance(g, ParallelBeam2D)
    assert (g.image_size, g.n_angles, g.angle_range, g.n_detectors) == (512, 143, math.pi, 725)  # ceil(sqrt2 512)
    assert p.scan.pixel_mm == pytest.approx(260 / 512) and p.scan.bin_width_mm == pytest.approx(0.5078125)
    assert p.noise.photons == 4096 and p.noise.scale == "fixed"
    # LoDoPaB's attenuation scale over 26 cm: mu = 81.35858 / m * 0.26 m / 512 per pixel
    assert p.noise.bind(p.operator()).mu == pytest.approx(81.35858 * 0.26 / 512)
    assert p.attack.steps >= 300 and p.attack.restarts >= 2 and p.attack.verify >= 8  # the paper budget or more
    assert p.eps_grid == (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04)


@pytest.mark.parametrize("name, photons, views, angle_range", [
    ("lion-low-dose", 3500, 360, 2 * math.pi), ("lion-extreme-low-dose", 1000, 360, 2 * math.pi),
    ("lion-sparse-view", 10000, 50, 2 * math.pi), ("lion-limited-angle", 10000, 60, math.pi / 3)])
def test_lion_settings(name, photons, views, angle_range):
    """LION: 512 px of 300 mm (0.5859375 mm), 900 bins of 1 mm, source-origin 575 mm, source-detector 1050 mm."""
    p = PROTOCOLS[name]
    g = p.geometry()
    assert isinstance(g, FanBeam2D)
    px = 300 / 512
    assert p.scan.pixel_mm == pytest.approx(0.5859375)
    assert g.source_origin == pytest.approx(575 / px) == pytest.approx(981.3333, abs=1e-3)
    assert g.origin_detector == pytest.approx((1050 - 575) / px) == pytest.approx(810.6667, abs=1e-3)
    assert g.detector_spacing == pytest.approx(1 / px) == pytest.approx(1.706667, abs=1e-5)
    assert g.n_detectors == 900 and g.n_detectors * g.detector_spacing * px == pytest.approx(900.0)  # 900 mm
    assert g.magnification == pytest.approx(1050 / 575)
    assert (g.n_angles, g.angle_range) == (views, pytest.approx(angle_range))
    n = p.noise
    assert (n.photons, n.read_noise, n.crosstalk, n.scale, n.clip_negative) == (photons, 5.0, 0.05, "max", True)


def test_lodopab_setting():
    """LoDoPaB: 362 px of 260 mm, 1000 views on [0, pi), 513 bins over ODL's default width (the circle around
    the domain, 2 sqrt(2) 130 mm), 4096 photons; the bin width checked against ODL itself."""
    from odl import uniform_discr
    from odl.applications.tomo import parallel_beam_geometry

    p = PROTOCOLS["lodopab"]
    g = p.geometry()
    assert (g.image_size, g.n_angles, g.n_detectors, g.angle_range) == (362, 1000, 513, math.pi)
    assert p.scan.pixel_mm == pytest.approx(0.7182320)
    assert p.scan.bin_width_mm == pytest.approx(2 * math.sqrt(2) * 130 / 513) == pytest.approx(0.716755, abs=1e-5)
    odl_geo = parallel_beam_geometry(uniform_discr([-0.13, -0.13], [0.13, 0.13], (64, 64)), num_angles=10, det_shape=513)
    assert p.scan.bin_width_mm == pytest.approx(1000 * float(odl_geo.det_partition.cell_sides[0]))
    assert p.noise.photons == 4096
    assert p.noise.bind(p.operator()).mu == pytest.approx(21.153 / 362, rel=1e-4)


def _changed(value):
    """A different valid value of the same kind."""
    if value is None:
        return 1
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.9 + (0.01 if value == 0 else 0)
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple):
        return value + (value[-1],) if value else ("x",)
    raise AssertionError(f"no change rule for {value!r}")


def test_fingerprint_changes_when_any_field_changes():
    base = PROTOCOLS["lion-low-dose"]
    seen = {base.fingerprint()}
    variants = []
    for f in dataclasses.fields(Protocol):
        value = getattr(base, f.name)
        if dataclasses.is_dataclass(value):
            for g in dataclasses.fields(value):
                if g.name in ("mu", "image_size"):  # unset for scale="max" (checked on a fixed-scale model below)
                    continue
                sub = getattr(value, g.name)
                new = _changed(sub) if not (g.name == "angle_range") else sub / 2
                if g.name == "scale":
                    new = "fixed"
                if g.name == "beam":  # a parallel beam has no source distances
                    variants.append(("scan.beam", dataclasses.replace(base, scan=dataclasses.replace(
                        value, beam="parallel", source_origin_mm=None, source_detector_mm=None))))
                    continue
                variants.append((f"{f.name}.{g.name}", dataclasses.replace(base, **{f.name: dataclasses.replace(value, **{g.name: new})})))
        else:
            variants.append((f.name, dataclasses.replace(base, **{f.name: _changed(value)})))
    fixed = PROTOCOLS["lodopab"]
    variants.append(("noise.mu", dataclasses.replace(fixed, noise=dataclasses.replace(fixed.noise, mu=0.05))))
    variants.append(("noise None", dataclasses.replace(base, noise=None)))
    seen.add(fixed.fingerprint())
    names = {name for name, _ in variants}
    assert {f.name for f in dataclasses.fields(Protocol)} <= {n.split(".")[0] for n in names}
    for name, variant in variants:
        fp = variant.fingerprint()
        assert fp not in seen, name
        seen.add(fp)
    assert base.fingerprint() == Protocol.from_config(json.loads(json.dumps(base.to_config()))).fingerprint()
    assert len({p.fingerprint() for p in PROTOCOLS.values()}) == len(PROTOCOLS)


def test_configs_round_trip():
    for p in PROTOCOLS.values():
        again = Protocol.from_config(json.loads(json.dumps(p.to_config())))
        assert again == p and again.fingerprint() == p.fingerprint()


@pytest.mark.parametrize("name", list(PROTOCOLS))
@pytest.mark.parametrize("n", [64, 128, 256])
def test_at_size_keeps_the_field_of_view_and_the_detector(name, n):
    p = PROTOCOLS[name]
    q = p.at_size(n)
    s0, s = p.scan, q.scan
    assert s.fov_mm == s0.fov_mm and s.pixel_mm == pytest.approx(s0.fov_mm / n)
    assert s.detector_width_mm == pytest.approx(s0.detector_width_mm)
    assert s.n_bins == round(s0.n_bins * n / s0.image_size)
    assert (s.n_views, s.angle_range, s.source_origin_mm, s.source_detector_mm) == (
        s0.n_views, s0.angle_range, s0.source_origin_mm, s0.source_detector_mm)
    assert q.noise == p.noise and q.eps_grid == p.eps_grid and q.attack == p.attack
    g = q.geometry()
    assert g.image_size == n and g.n_detectors == s.n_bins
    spacing = getattr(g, "detector_spacing", 1.0)  # parallel beam: bins of one pixel
    # the pixel-unit detector is the physical one (parallel beam: up to the 1-pixel bin's approximation)
    assert g.n_detectors * spacing * s.pixel_mm == pytest.approx(s0.detector_width_mm, rel=0.01)
    if s.beam == "fan":
        assert g.source_origin * s.pixel_mm == pytest.approx(s0.source_origin_mm)
        assert (g.source_origin + g.origin_detector) * s.pixel_mm == pytest.approx(s0.source_detector_mm)
    assert p.at_size(s0.image_size) == p
    assert get_protocol(name, n) == q


def test_conversion_refuses_what_it_cannot_represent():
    with pytest.raises(ValueError, match="one pixel wide"):
        to_pixels(ScanGeometry("parallel", 100, 100.0, 10, math.pi, 50, 2.0))  # 2-pixel bins
    with pytest.raises(ValueError, match="source"):
        ScanGeometry("fan", 100, 100.0, 10, math.pi, 50, 1.0)
    with pytest.raises(ValueError, match="behind"):
        ScanGeometry("fan", 100, 100.0, 10, math.pi, 50, 1.0, source_origin_mm=500.0, source_detector_mm=400.0)
    with pytest.raises(ValueError, match="no source"):
        ScanGeometry("parallel", 100, 100.0, 10, math.pi, 50, 1.0, source_origin_mm=500.0)
    with pytest.raises(ValueError, match="unknown protocol"):
        get_protocol("mayo")


def test_a_protocol_measures_at_small_size():
    """The LION sparse-view protocol at 32 px: its operator and noise give finite, non-negative data whose
    noise falls with the dose (extreme low dose noisier than clinical)."""
    from ctrobust.data.phantoms import PhantomDataset
    from ctrobust.operators.noise import measure

    x = torch.stack([PhantomDataset(2, 32, seed=1)[i] for i in range(2)])
    levels = {}
    for name in ("lion-sparse-view", "lion-extreme-low-dose"):
        p = dataclasses.replace(get_protocol(name, 32), scan=dataclasses.replace(get_protocol(name, 32).scan, n_views=20))
        op = p.operator()
        clean, noisy = op(x), measure(op, x, p.noise, seed=0)
        assert torch.isfinite(noisy).all() and bool((noisy >= 0).all())
        levels[name] = float((noisy - clean).norm() / clean.norm())
    assert 0 < levels["lion-sparse-view"] < levels["lion-extreme-low-dose"]


def test_cards_are_the_docs():
    """docs/protocols.md holds every protocol's card as card() prints it (regenerate the card section when a
    protocol changes: python -c 'from ctrobust.evaluation.protocols import protocol_cards; print(protocol_cards())')."""
    text = DOCS.read_text()
    for p in PROTOCOLS.values():
        assert p.card() in text, f"docs/protocols.md: the card of {p.name} is out of date"
        assert p.fingerprint() in p.card() and p.name in p.summary()


def test_the_cards_attack_flags_are_ctrobust_attacks():
    """The card's verified budget is a command line a user can paste: ``ctrobust attack`` parses it to the budget."""
    import shlex

    from ctrobust.cli import build_parser

    for p in PROTOCOLS.values():
        b = p.attack
        args = build_parser().parse_args(["attack", "--method", "fbp", *shlex.split(b.flags())])
        assert (args.attack, args.steps, args.restarts, args.verify, args.verify_steps, args.verify_restarts,
                args.target) == (b.rule, b.steps, b.restarts, b.verify, b.verify_steps, b.verify_restarts, b.target)
