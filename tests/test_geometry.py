"""ParallelBeam2D: defaults, validation, serialisation, hashing."""

import json
import math

import numpy as np
import pytest

from ctrobust import ParallelBeam2D


def test_defaults_and_shapes():
    g = ParallelBeam2D(64, 30)
    assert g.n_detectors == math.ceil(math.sqrt(2) * 64) == 91
    assert g.angle_range == math.pi
    assert g.image_shape == (64, 64)
    assert g.sinogram_shape == (30, 91)
    assert ParallelBeam2D(256, 143).n_detectors == 363


def test_angles_uniform_endpoint_excluded():
    g = ParallelBeam2D(16, 8)
    np.testing.assert_allclose(g.angles, np.arange(8) * math.pi / 8, rtol=0, atol=1e-15)
    assert g.angles.dtype == np.float64
    h = ParallelBeam2D(16, 4, angle_range=2 * math.pi)
    np.testing.assert_allclose(h.angles, [0, math.pi / 2, math.pi, 3 * math.pi / 2])


def test_repr_pastes_back_and_dict_round_trip():
    g = ParallelBeam2D(37, 31, n_detectors=55, angle_range=2.0)
    assert eval(repr(g)) == g  # noqa: S307 - the repr is a call
    d = g.to_config()
    assert json.loads(json.dumps(d)) == d
    assert ParallelBeam2D.from_config(d) == g
    with pytest.raises(ValueError, match="not a ParallelBeam2D"):
        ParallelBeam2D.from_config({**d, "type": "FanBeam"})


def test_frozen_and_hashable():
    g = ParallelBeam2D(8, 4)
    with pytest.raises(AttributeError):
        g.image_size = 9  # type: ignore[misc]
    assert len({g, ParallelBeam2D(8, 4), ParallelBeam2D(8, 5)}) == 2


def test_key_stable_and_distinct():
    g = ParallelBeam2D(64, 30)
    assert g.key() == ParallelBeam2D(64, 30, n_detectors=91).key()  # default == explicit
    assert len(g.key()) == 16
    keys = {
        g.key(),
        ParallelBeam2D(64, 31).key(),
        ParallelBeam2D(65, 30).key(),
        ParallelBeam2D(64, 30, n_detectors=92).key(),
        ParallelBeam2D(64, 30, angle_range=math.pi / 2).key(),
    }
    assert len(keys) == 5


def test_numpy_integers_accepted():
    g = ParallelBeam2D(np.int64(32), np.int32(10))
    assert type(g.image_size) is int and type(g.n_angles) is int


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": 0, "n_angles": 3}, "image_size"),
        ({"image_size": 8.0, "n_angles": 3}, "image_size"),
        ({"image_size": True, "n_angles": 3}, "image_size"),
        ({"image_size": 8, "n_angles": -1}, "n_angles"),
        ({"image_size": 8, "n_angles": 3, "n_detectors": 0}, "n_detectors"),
        ({"image_size": 8, "n_angles": 3, "angle_range": 0.0}, "angle_range"),
        ({"image_size": 8, "n_angles": 3, "angle_range": 7.0}, "angle_range"),
        ({"image_size": 8, "n_angles": 3, "angle_range": float("nan")}, "angle_range"),
    ],
)
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ParallelBeam2D(**kwargs)
