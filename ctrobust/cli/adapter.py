"""The generic adapter from a spec class (:mod:`ctrobust.app.specs`) to an argparse parser and back.

Every option of every command is generated here from its spec field: ``--field-name`` (or the field's
``flag``), ``type=`` the field's ``parse`` (so bad values are usage errors at parse time), ``choices``,
``BooleanOptionalAction`` for switches (``--progress`` / ``--no-progress``), ``action="append"`` for
repeatable options, hidden aliases for older spellings, and a help text ending in the field's one default
(and unit). Nothing here knows a particular command.

Building the parser imports no library module (and so no torch): defaults and choices the specs read from
the library (:class:`ctrobust.app.spec.Library`) are resolved when ``--help`` is printed (the help texts
are formatted then, by :class:`SpecHelpFormatter`) or when a value is parsed (choices are checked by the
option's ``type=``).
"""

from __future__ import annotations

import argparse
import dataclasses

from ctrobust.app.spec import Library, resolve
from ctrobust.errors import CtrobustError


class SpecHelpFormatter(argparse.HelpFormatter):
    """Formats a spec option's help from its field when help is printed (so library defaults load only then)."""

    def _get_help_string(self, action):
        field = getattr(action, "spec_field", None)
        return help_text(field) if field is not None else super()._get_help_string(action)

    def _metavar_formatter(self, action, default_metavar):
        # ``{a,b,c}`` for choices read from the library, when help or usage is formatted (argparse's own check
        # while adding the argument passes no default metavar: the library is not read then)
        lazy = getattr(action, "lazy_choices", None)
        if lazy is not None and action.metavar is None and default_metavar is not None:
            result = "{" + ",".join(map(str, lazy.resolve())) + "}"
            return lambda size: (result,) * size
        return super()._metavar_formatter(action, default_metavar)


def _checked_choice(parse, choices: Library, flag: str):
    """A ``type=`` callable: ``parse`` (if any), then membership in the library's ``choices`` (read now)."""
    def check(text):
        value = parse(text) if parse is not None else text
        allowed = choices.resolve()
        if value not in allowed:
            raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(map(str, allowed))})")
        return value

    check.__name__ = flag.lstrip("-")
    return check

__all__ = ["add_spec_parser", "add_spec_arguments", "spec_from_args", "help_text", "SpecHelpFormatter"]


def _is_switch(field: dataclasses.Field) -> bool:
    """A boolean option (``--x`` / ``--no-x``), known from the annotation without resolving a library default."""
    return field.type in ("bool", bool) or isinstance(field.default, bool)


def _default_text(field: dataclasses.Field) -> str | None:
    meta = field.metadata
    if meta.get("library_default") is not None:
        try:
            return str(meta['library_default']())
        except Exception:  # a library that cannot be imported here: say nothing about its default
            return None
    try:
        default = resolve(field.default)
    except Exception:  # pragma: no cover - a library that cannot be imported here
        return None
    if default is None or default == ():
        return meta.get("default_text")
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple):
        return ",".join(map(str, default))
    return str(default)


def help_text(field: dataclasses.Field) -> str:
    """The --help text of a spec field: its help, then ``(default: ...; unit: ...)`` from the field."""
    meta = field.metadata
    parts = []
    default = _default_text(field)
    if default is not None and not meta.get("required"):
        parts.append(f"default: {default}")
    if meta.get("unit"):
        parts.append(f"unit: {meta['unit']}")
    text = meta.get("help", "")
    text = text() if callable(text) else text
    if parts:
        text = f"{text} ({'; '.join(parts)})"
    return text.replace("%", "%%")


def add_spec_arguments(parser: argparse.ArgumentParser, spec_cls) -> None:
    """Add one argument per field of ``spec_cls`` (grouped by the fields' ``group``)."""
    groups: dict = {}
    exclusive: dict = {}
    for field in dataclasses.fields(spec_cls):
        meta = field.metadata
        if not meta or not meta.get("cli", True):
            continue
        target = parser
        if meta.get("group"):
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_argument_group(meta["group"])
            target = groups[meta["group"]]
        if meta.get("exclusive"):
            key = (meta.get("group"), meta["exclusive"])
            if key not in exclusive:
                exclusive[key] = target.add_mutually_exclusive_group()
            target = exclusive[key]
        kw = {"help": (meta.get("help") if isinstance(meta.get("help"), str) else "") or " "}  # see SpecHelpFormatter
        if meta.get("positional"):
            kw.update(nargs="+" if meta.get("required") else "*", metavar=meta.get("metavar") or field.name.upper())
            if meta.get("parse"):
                kw["type"] = meta["parse"]
            target.add_argument(field.name, **kw).spec_field = field
            continue
        flag = spec_cls.flag(field.name)
        kw.update(dest=field.name, default=argparse.SUPPRESS)  # absent flags keep the spec's default
        if _is_switch(field):
            kw["action"] = argparse.BooleanOptionalAction
        else:
            if meta.get("repeat"):
                kw["action"] = "append"
            if meta.get("parse"):
                kw["type"] = meta["parse"]
            if isinstance(meta.get("choices"), Library):
                kw["type"] = _checked_choice(meta.get("parse"), meta["choices"], flag)
            elif meta.get("choices") is not None:
                kw["choices"] = meta["choices"]
            if meta.get("metavar"):
                kw["metavar"] = meta["metavar"]
            if meta.get("required"):
                kw["required"] = True
        action = target.add_argument(flag, **kw)
        action.spec_field = field
        if isinstance(meta.get("choices"), Library):
            action.lazy_choices = meta["choices"]
        for alias in meta.get("aliases", ()):  # older spellings: accepted, not shown
            alias_kw = {k: v for k, v in kw.items() if k not in ("help", "required")}
            if alias_kw.get("action") is argparse.BooleanOptionalAction:
                alias_kw["action"] = "store_true"
            target.add_argument(alias, **alias_kw, help=argparse.SUPPRESS)


def add_spec_parser(subparsers, name: str, spec_cls, *, help: str, description: str, run) -> argparse.ArgumentParser:
    """Register subcommand ``name`` whose options are the fields of ``spec_cls``; ``run(args)`` runs it."""
    # allow_abbrev=False: an option is spelt in full, so a shortened or mistyped one (`--restart 5`,
    # `--verify-s 300`) is an error and not silently another option, today's or one added later
    p = subparsers.add_parser(name, help=help, description=description, allow_abbrev=False,
                              formatter_class=SpecHelpFormatter)
    add_spec_arguments(p, spec_cls)
    p.set_defaults(func=run, spec_cls=spec_cls)
    return p


def spec_from_args(spec_cls, args: argparse.Namespace):
    """The spec of a parsed command line (given options only; the others keep the spec's defaults).

    Building the spec validates it, so a contradiction raises :class:`CtrobustError` before any work.
    """
    names = {f.name for f in dataclasses.fields(spec_cls)}
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items() if k in names}
    try:
        return spec_cls(**given)
    except TypeError as exc:  # pragma: no cover - a field the spec lacks
        raise CtrobustError(str(exc)) from None
