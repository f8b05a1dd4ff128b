"""Named factories: how models (and objectives) are built from a JSON-able description.

A **model** is named either by a registry name (``"fbpconvnet"``, ``"lpd"``; historical class names such as
``"FBPConvNet"`` stay readable in old checkpoints) or by an import path ``"mypkg.nets:make_net"`` of a
factory ``make_net(operator, **options) -> nn.Module``. A description is ``{"type": name_or_path,
**options}`` with JSON-able options; :func:`build_model` turns it into the network, always as
``factory(operator, **options)``. :func:`register_model` adds a name. Built-in names resolve lazily, so
naming ``lpd`` imports its module only when it is built.

A model describes itself with ``to_config()`` (built-in networks) or, when a factory built it through
:func:`build_model`, with the description recorded on it; :func:`model_config` returns either, and
:func:`model_factory_path` the factory's import path, which checkpoints store beside the options so that
a fresh process rebuilds the model by importing that module (and nothing else from the file).

:class:`Registry` is the one helper behind these lookups (``ctrobust.training.objectives`` uses it too):
a name -> factory map whose values may be import paths resolved on first use, and :func:`construct`,
which calls ``factory(*args, **options)`` after checking the option names against its signature.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from typing import Callable

from ctrobust.errors import CtrobustError

__all__ = ["Registry", "MODELS", "register_model", "build_model", "model_config", "model_factory_path",
           "import_path", "is_import_path", "construct", "model_names", "check_checkpointable"]

_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
#: attribute holding the description of a model built by a factory without ``to_config()``
_DESCRIPTION = "_ctrobust_model"


def is_import_path(text) -> bool:
    """Whether ``text`` reads as ``"package.module:attribute"``."""
    return isinstance(text, str) and bool(_PATH.match(text))


def import_path(path: str, what: str = "factory"):
    """The object named by ``"package.module:attribute"``: imports the module (and only that).

    Raises :class:`CtrobustError` naming the module when it cannot be imported or lacks the attribute.
    """
    if not is_import_path(path):
        raise CtrobustError(f"{what} {path!r} is not an import path of the form 'package.module:name'")
    module_name, attr = path.split(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise CtrobustError(f"cannot import module {module_name!r} of {what} {path!r}: {exc}. Make it importable "
                            "(install its package, or add its folder to PYTHONPATH)") from None
    except Exception as exc:  # the module itself failed while being imported
        raise CtrobustError(f"importing module {module_name!r} of {what} {path!r} failed: "
                            f"{type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CtrobustError(f"module {module_name!r} has no {attr!r} ({what} {path!r})") from None
    return obj


def factory_path_of(obj) -> str:
    """``"module:qualname"`` of a function or class."""
    return f"{obj.__module__}:{obj.__qualname__}"


def construct(factory: Callable, options: dict, *args, what: str = "factory"):
    """``factory(*args, **options)``, refusing option names the factory does not take (``ValueError``)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        params = None
    if params is not None and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        known = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"{what} takes no option {', '.join(map(repr, unknown))}; its options: "
                             f"{', '.join(k for k in known[len(args):]) or 'none'}")
    return factory(*args, **options)


class Registry:
    """A name -> factory map; a value may be an import path ``"module:attr"``, imported on first lookup."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, object] = {}
        self._hidden: set[str] = set()

    def register(self, name: str, factory, *, hidden: bool = False) -> None:
        if not isinstance(name, str) or not name or ":" in name:
            raise ValueError(f"a {self.what} name must be a non-empty string without ':', got {name!r}")
        self._entries[name] = factory
        if hidden:
            self._hidden.add(name)

    def names(self) -> tuple[str, ...]:
        """The registered names (without the hidden historical aliases)."""
        return tuple(n for n in self._entries if n not in self._hidden)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self.names())

    def get(self, name: str):
        """The factory registered as ``name`` (an import path value is imported now); ``KeyError`` if unknown."""
        value = self._entries[name]
        if isinstance(value, str):
            value = import_path(value, f"{self.what} {name!r}")
            self._entries[name] = value
        return value

    def path(self, name: str) -> str:
        """The import path of the factory registered as ``name``, without importing it when it is lazy."""
        value = self._entries[name]
        return value if isinstance(value, str) else factory_path_of(value)


# -- models ------------------------------------------------------------------------------------------
MODELS = Registry("model")
for _name, _path in {
    "fbpconvnet": "ctrobust.models.fbpconvnet:FBPConvNet",
    "lpd": "ctrobust.models.unrolled:LearnedPrimalDual",
    "residual": "ctrobust.models.residual:ResidualReconstruction",
    "cs-residual": "ctrobust.models.cs_net:CSResidualNet",
}.items():
    MODELS.register(_name, _path)
for _name, _path in {  # the types stored by earlier checkpoints and by the networks' to_config()
    "FBPConvNet": "ctrobust.models.fbpconvnet:FBPConvNet",
    "ResidualReconstruction": "ctrobust.models.residual:ResidualReconstruction",
    "CSResidualNet": "ctrobust.models.cs_net:CSResidualNet",
    "UNet": "ctrobust.models.registry:_unet",
    "LinearReconstruction": "ctrobust.models.registry:_linear",
    "Adversary": "ctrobust.models.registry:_adversary",
}.items():
    MODELS.register(_name, _path, hidden=True)


def _unet(operator=None, **options):
    from ctrobust.models.unet import UNet

    return UNet(**options)


def _linear(operator=None, *, m: int, n: int, dtype: str = "float32"):
    import torch

    from ctrobust.models.linear import LinearReconstruction

    return LinearReconstruction(m, n, dtype=getattr(torch, dtype))


def _adversary(operator=None, *, measurement_shape, **options):
    from ctrobust.models.adversary import Adversary

    return Adversary(measurement_shape, **options)


def model_names() -> tuple[str, ...]:
    """The names ``--model`` lists (a ``module:factory`` path is always accepted too)."""
    return MODELS.names()


def register_model(name: str, factory: Callable | None = None):
    """Register ``factory(operator, **options) -> nn.Module`` as model ``name``; usable as a decorator.

    A checkpoint of such a model stores the factory's import path too, so a fresh process rebuilds it
    by importing that module (which registers the name again).
    """
    def add(f):
        MODELS.register(name, f)
        return f

    return add(factory) if factory is not None else add


def resolve_model(name: str, factory_path: str | None = None) -> tuple[Callable, str]:
    """``(factory, import_path)`` of a model named by a registry name or an import path.

    ``factory_path`` (stored in checkpoints) is used when ``name`` is not registered in this process.
    """
    if isinstance(name, str) and name in MODELS:
        path = MODELS.path(name)
        return MODELS.get(name), path
    if is_import_path(name):
        return import_path(name, "model factory"), name
    if factory_path:
        return import_path(factory_path, f"factory of model {name!r}"), factory_path
    raise ValueError(f"unknown model type {name!r}: give a registered name ({', '.join(model_names())}) or the "
                     "import path 'package.module:factory' of a function factory(operator, **options)")


def _needs_operator(factory) -> bool:
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD) \
        and params[0].default is inspect.Parameter.empty


def _seeded_call(factory, operator, options: dict, seed):
    """``factory(operator, **options)``; ``seed`` goes to a factory taking ``seed`` (unless given in options),
    else the call runs with the global torch RNG seeded to it and restored afterwards."""
    from ctrobust.models.unet import seeded

    try:
        takes_seed = "seed" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_seed = False
    if takes_seed and seed is not None and "seed" not in options:
        return construct(factory, {**options, "seed": seed}, operator, what=f"model factory {factory_path_of(factory)}")
    with seeded(seed):
        return construct(factory, options, operator, what=f"model factory {factory_path_of(factory)}")


def build_model(config: dict, operator=None, *, seed: int | None = None, factory: str | None = None):
    """The network a description ``{"type": name_or_path, **options}`` names: ``factory(operator, **options)``.

    ``seed`` seeds the initialisation without touching the caller's global RNG. ``factory`` is the import
    path a checkpoint stored, used when ``type`` is not registered here. A network without ``to_config()``
    gets the description recorded on it (:func:`model_config` returns it), so it can be checkpointed.
    Raises ``ValueError`` for an unknown type or option, :class:`CtrobustError` when the factory's module
    cannot be imported.
    """
    cfg = dict(config)
    kind = cfg.pop("type", None)
    if kind is None:
        raise ValueError(f"model config {config!r} has no 'type'")
    fn, path = resolve_model(kind, factory)
    if operator is None and _needs_operator(fn):
        raise ValueError(f"rebuilding model {kind!r} needs its operator: build_model(config, operator)")
    model = _seeded_call(fn, operator, cfg, seed)
    if not hasattr(model, "to_config"):
        model.__dict__[_DESCRIPTION] = {"config": {"type": kind, **cfg}, "factory": path}
    return model


def model_config(model) -> dict | None:
    """A model's description: its ``to_config()``, or the one :func:`build_model` recorded; None without."""
    if hasattr(model, "to_config"):
        return dict(model.to_config())
    recorded = getattr(model, "__dict__", {}).get(_DESCRIPTION)
    return dict(recorded["config"]) if recorded else None


def model_factory_path(model) -> str | None:
    """The import path of the factory that rebuilds ``model`` (None when it cannot be rebuilt)."""
    recorded = getattr(model, "__dict__", {}).get(_DESCRIPTION)
    if recorded:
        return recorded["factory"]
    cfg = model_config(model)
    if cfg is None:
        return None
    try:
        return resolve_model(cfg.get("type"))[1]
    except (ValueError, CtrobustError):
        return None


def check_checkpointable(model) -> None:
    """Refuse (``CtrobustError``) a model a checkpoint could not rebuild, saying what to add.

    Needs a description (``to_config()`` or built by :func:`build_model`), JSON-able options, and a factory
    importable by a fresh process (not one defined in ``__main__``, a script).
    """
    name = type(model).__name__
    cfg = model_config(model)
    how = ("build it through the model registry: build_model({'type': 'package.module:factory', **options}, "
           "operator) with a function factory(operator, **options) -> nn.Module defined in an importable module "
           "(or @register_model('name') on that factory), or give the class a to_config() returning "
           "{'type': <registered name or 'package.module:factory'>, **options} (docs/models.md)")
    if cfg is None:
        raise CtrobustError(f"{name} cannot be checkpointed: it has no description of how to rebuild it; {how}")
    try:
        json.dumps(cfg)
    except (TypeError, ValueError) as exc:
        raise CtrobustError(f"{name}'s description {cfg!r} is not JSON-able ({exc}); give only numbers, strings, "
                            "booleans, None and lists/dicts of them as options") from None
    path = model_factory_path(model)
    if path is None:
        raise CtrobustError(f"{name} describes itself as type {cfg.get('type')!r}, which is neither a registered "
                            f"model name nor an import path; {how}")
    if path.split(":")[0] == "__main__":
        raise CtrobustError(f"{name}'s factory {path} is defined in the script being run (__main__), which another "
                            "process cannot import to rebuild the checkpoint; move the factory into a module (e.g. "
                            "mynets.py beside the script) and import it from there (docs/models.md)")
