"""Spec fields: each option of a command is one dataclass field carrying its help, unit, choices and default.

A *spec* is a frozen dataclass (a subclass of :class:`Spec`) whose fields are made with :func:`option`.
The field holds the ONE default of the option; its metadata holds what a user needs to know about it:

- ``help``: what it does (plain text, ``%`` written as is);
- ``unit``: the unit of a number (``"pixels"``, ``"views on [0, pi)"``, ``"fraction of ||y||_2"``);
- ``choices``: the allowed values (checked when the spec is built, and by the command line at parse time);
- ``parse``: a function text -> value that also validates (e.g. :func:`positive_int`); the command line
  uses it as ``type=``, the spec's ``__post_init__`` applies it to non-text values by their ``str``;
- ``library_default``: for options whose default ``None`` means "the library's default", a function
  returning that default (shown in ``--help``);
- a default (or ``choices``) may be a :class:`Library` value, read from the library when first needed:
  ``option(Library("ctrobust.training.trainer:fit", "lr"), ...)`` is the default of ``fit``'s ``lr``,
  ``choices=Library("ctrobust.training.objectives:OBJECTIVES", names=True)`` the keys of that map. The
  library (and torch) is imported when a spec is built or ``--help`` is printed, never when the parser is
  built; :meth:`Spec.default` gives a field's resolved default;
- ``default_text``: how to describe a ``None`` default in ``--help``;
- command-line details: ``flag`` (when not ``--field-name``), ``aliases`` (older spellings, accepted but
  not shown), ``metavar``, ``group`` (the ``--help`` section), ``positional``, ``repeat`` (the flag may be
  given several times; the field is a tuple), ``exclusive`` (a name shared by options that exclude each
  other), ``required``, ``cli=False`` (not on the command line);
- ``radius=True``: a perturbation radius relative to ``||y||_2`` (unless the spec's ``absolute``): values
  above :data:`MAX_RELATIVE_EPS` are refused unless the spec's ``allow_large_eps`` (:func:`check_radii`).

Building a spec validates it (:meth:`Spec.__post_init__`), so a bad choice is refused before a command
does anything, whether it comes from the command line or from Python.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any, Callable

from ctrobust.errors import CtrobustError

__all__ = ["option", "Spec", "Library", "resolve", "signature_default", "library_default_mismatches", "positive_int",
           "nonneg_int", "image_size", "nonneg_float", "positive_float", "fraction", "eps_list", "device_name",
           "MIN_IMAGE_SIZE", "MAX_RELATIVE_EPS", "LargeEpsError", "check_radii"]

#: Smallest image side in pixels the commands accept (validation SSIM uses a 7 x 7 window).
MIN_IMAGE_SIZE = 8


def signature_default(func, name: str):
    """The default of parameter ``name`` of ``func`` (a callable, or ``"module:callable"``: then a :class:`Library`
    value, resolved when first needed, so that naming it imports nothing)."""
    if isinstance(func, str):
        return Library(func, name)
    import inspect

    return inspect.signature(func).parameters[name].default


class Library:
    """A value the library holds, read on first use: the attribute ``"module:name"`` (``names=True``: its keys,
    as a tuple) or, with ``param``, the default of that parameter of the callable it names."""

    def __init__(self, path: str, param: str | None = None, *, names: bool = False):
        self.path, self.param, self.names = path, param, names

    def resolve(self):
        if not hasattr(self, "_value"):
            import importlib

            module, attr = self.path.split(":")
            obj = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            if self.param is not None:
                obj = signature_default(obj, self.param)
            elif self.names:
                obj = tuple(obj)
            if isinstance(obj, list):
                obj = tuple(obj)
            self._value = obj
        return self._value

    def __repr__(self) -> str:
        return f"Library({self.path!r}" + (f", {self.param!r}" if self.param else "") + ")"


def resolve(value):
    """``value``, or what a :class:`Library` value stands for."""
    return value.resolve() if isinstance(value, Library) else value


def library_default_mismatches(spec_cls, links: dict) -> list[str]:
    """The fields of ``spec_cls`` whose default differs from the library default they stand for.

    ``links`` maps a field name to ``"module:callable"`` (the parameter of the same name), to
    ``("module:callable", "param")``, or to a list of those (every one must agree). Returns one line per
    difference, empty when all agree (a test asserts that, so a literal default cannot drift).
    """
    problems = []
    for name, targets in links.items():
        targets = targets if isinstance(targets, list) else [targets]
        have = spec_cls.default(name)
        for target in targets:
            path, param = target if isinstance(target, tuple) else (target, name)
            want = Library(path, param).resolve()
            if have != want:
                problems.append(f"{spec_cls.__name__}.{name} = {have!r} but {path} has {param}={want!r}")
    return problems


def option(default: Any = None, help: str = "", *, unit: str | None = None, choices=None,
           parse: Callable[[str], Any] | None = None, library_default: Callable[[], Any] | None = None,
           default_text: str | None = None, flag: str | None = None, aliases: tuple = (), metavar=None,
           group: str | None = None, positional: bool = False, repeat: bool = False, exclusive: str | None = None,
           required: bool = False, cli: bool = True, radius: bool = False):
    """A spec field (see the module docstring); lists are stored as tuples so specs stay hashable."""
    if isinstance(default, list):
        default = tuple(default)
    if choices is not None and not isinstance(choices, Library):
        choices = tuple(choices)
    meta = {"help": help, "unit": unit, "choices": choices, "parse": parse,
            "library_default": library_default, "default_text": default_text, "flag": flag,
            "aliases": tuple(aliases), "metavar": metavar, "group": group, "positional": positional,
            "repeat": repeat, "exclusive": exclusive, "required": required, "cli": cli, "radius": radius}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Spec:
    """Base of the command specs: validation on construction, conversion to a JSON-able dict."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            meta = f.metadata
            value = getattr(self, f.name)
            if isinstance(value, Library):  # a default read from the library now
                object.__setattr__(self, f.name, value := value.resolve())
            if not meta:
                continue
            if isinstance(value, list):
                object.__setattr__(self, f.name, value := tuple(value))
            if value is None or value == ():
                if meta.get("required"):
                    raise CtrobustError(f"{self.flag(f.name)} is required")
                continue
            values = value if meta.get("repeat") or isinstance(value, tuple) else (value,)
            choices = resolve(meta.get("choices"))
            for v in values:
                if choices is not None and v not in choices:
                    raise CtrobustError(f"{self.flag(f.name)} {v!r}: choose one of {', '.join(map(str, choices))}")
            parse = meta.get("parse")
            for v in values if parse is not None else ():
                try:
                    parse(str(v))
                except argparse.ArgumentTypeError as exc:
                    raise CtrobustError(f"{self.flag(f.name)}: {exc}") from None
        check_radii(self)
        self.check()

    def check(self) -> None:
        """Checks across fields (a subclass overrides it); raise :class:`CtrobustError`."""

    @classmethod
    def default(cls, name: str):
        """The default of field ``name`` (a :class:`Library` default is read from the library)."""
        return resolve({f.name: f for f in dataclasses.fields(cls)}[name].default)

    @classmethod
    def choices(cls, name: str):
        """The allowed values of field ``name`` (None: any)."""
        return resolve({f.name: f for f in dataclasses.fields(cls)}[name].metadata.get("choices"))

    @classmethod
    def flag(cls, name: str) -> str:
        """The command-line flag of field ``name`` (``--field-name`` unless the field says otherwise)."""
        meta = {f.name: f.metadata for f in dataclasses.fields(cls)}.get(name) or {}
        if meta.get("positional"):
            return name.upper()
        return meta.get("flag") or "--" + name.replace("_", "-")

    def given(self, name: str) -> bool:
        """Whether field ``name`` differs from its default (for options that only apply with another)."""
        return getattr(self, name) != self.default(name)

    def to_dict(self) -> dict:
        """The fields as a JSON-able dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def argv(self, always: tuple = ()) -> list[str]:
        """The command-line arguments that give this spec: every field that differs from its default (and
        the fields named in ``always``), e.g. ``["--angles", "60", "--no-progress"]``."""
        tokens: list[str] = []
        for f in dataclasses.fields(self):
            meta = f.metadata
            value = getattr(self, f.name)
            default = resolve(f.default)
            if not meta or not meta.get("cli", True) or (value == default and f.name not in always):
                continue
            flag = self.flag(f.name)
            if meta.get("positional"):
                tokens += [str(v) for v in value]
            elif isinstance(default, bool):
                tokens.append(flag if value else "--no-" + flag[2:])
            elif meta.get("repeat"):
                for v in value:
                    tokens += [flag, str(v)]
            elif isinstance(value, tuple):
                tokens += [flag, ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)]
            elif value is not None:
                tokens += [flag, str(value)]
        return tokens

    def replace(self, **changes):
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)


# -- value parsers (argparse ``type=`` callables, also used to validate specs) ---------------------------
def _number(text: str, kind, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def nonneg_int(text: str) -> int:
    value = _number(text, int, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def image_size(text: str) -> int:
    """An image side in pixels, at least :data:`MIN_IMAGE_SIZE`."""
    value = _number(text, int, f"an image size in pixels (an integer >= {MIN_IMAGE_SIZE})")
    if value < MIN_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"expected an image size of at least {MIN_IMAGE_SIZE} pixels "
                                         f"(SSIM uses a 7 x 7 window), got {text!r}")
    return value


def nonneg_float(text: str) -> float:
    value = _number(text, float, "a number >= 0")
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = nonneg_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number in (0, 1)."""
    v = nonneg_float(text)
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}")
    return v


def eps_list(text: str) -> tuple[float, ...]:
    """Comma-separated numbers >= 0, e.g. ``0,0.005,0.01``."""
    parts = [p for p in text.replace(" ", "").strip("()[]").split(",") if p]
    if not parts:
        raise argparse.ArgumentTypeError("expected comma-separated numbers such as 0,0.005,0.01")
    return tuple(nonneg_float(p) for p in parts)


# -- the eps bound --------------------------------------------------------------------------------------
#: Largest relative radius (fraction of ||y||_2) a command accepts without ``--allow-large-eps``. The
#: literature's grids stop at 0.05-0.1 (Antun et al. 2020, Genzel et al. 2022; this project's default grid at
#: 0.04, LoDoPaB's photon noise is about 0.04 of ||A x||); a radius of half the measurement's norm is already a
#: stress test, and 1.5 is nearly always "1.5 %" typed as a fraction. The bound is the commands' concern: the
#: library refuses only what has no meaning (negative, NaN, infinite) and takes any radius from Python.
MAX_RELATIVE_EPS = 0.5


class LargeEpsError(CtrobustError):
    """A relative eps above :data:`MAX_RELATIVE_EPS` without ``--allow-large-eps``: a usage error (exit 2)."""

    exit_code = 2


def check_radii(spec: "Spec") -> None:
    """Refuse relative radii above :data:`MAX_RELATIVE_EPS` in the fields marked ``radius=True`` (an option's
    metadata), unless the spec's ``absolute`` (radii in sinogram units) or ``allow_large_eps`` is set."""
    if getattr(spec, "absolute", False) or getattr(spec, "allow_large_eps", False):
        return
    for f in dataclasses.fields(spec):
        if not f.metadata.get("radius"):
            continue
        value = getattr(spec, f.name)
        large = [v for v in (value if isinstance(value, tuple) else (value,)) if v is not None and v > MAX_RELATIVE_EPS]
        if large:
            v = max(large)
            raise LargeEpsError(
                f"{spec.flag(f.name)} {v:g} is {100 * v:g} % of each sample's ||y||_2: eps is a fraction, not a percent "
                f"(for {v:g} % give {v / 100:g}); the literature's radii stop at 0.05-0.1 and this check at {MAX_RELATIVE_EPS:g}. "
                "Pass --allow-large-eps to use it anyway" + (", or --absolute for a radius in sinogram units"
                                                             if any(x.name == "absolute" for x in dataclasses.fields(spec))
                                                             else ""))


def device_name(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether CUDA is there is checked when the command runs)."""
    name = str(text).strip()
    head, _, index = name.partition(":")
    if name in ("auto", "cpu", "cuda", "mps") or (head == "cuda" and index.isdigit()):
        return name
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
