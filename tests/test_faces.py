"""Package faces: every exported name resolves, public names are unique across the package, and a bare
``import ctrobust`` reaches every layer lazily."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections import defaultdict

import pytest

import ctrobust

FACES = ["ctrobust"] + [f"ctrobust.{name}" for name in ctrobust.SUBPACKAGES if name != "cli"]


@pytest.mark.parametrize("face", FACES)
def test_every_exported_name_resolves(face):
    module = importlib.import_module(face)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{face}.{name}"


def test_public_names_are_unique():
    """One name, one object: two faces may re-export the same object, never two different ones."""
    owners: dict[str, dict[int, str]] = defaultdict(dict)
    for face in FACES:
        module = importlib.import_module(face)
        for name in module.__all__:
            owners[name].setdefault(id(getattr(module, name)), face)
    clashes = {name: sorted(by_id.values()) for name, by_id in owners.items() if len(by_id) > 1}
    assert not clashes, f"one public name, several objects: {clashes}"


def test_bare_import_is_cheap_and_reaches_every_layer():
    code = ("import sys, ctrobust; heavy = [m for m in ('torch', 'numpy') if m in sys.modules]; "
            "print(heavy); print(ctrobust.data.real_ct_slices.__module__, ctrobust.attacks.pga_attack.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]", f"import ctrobust imported {out[0]}"
    assert out[1] == "ctrobust.data.real ctrobust.attacks.measurement"
