"""Typed configuration: dataclasses overlaid with YAML files and dotted `key=value` overrides.

A config class is a `@dataclass(kw_only=True)` whose fields are scalars, lists of scalars or
nested config dataclasses. Each class may define `problems() -> list[str]` for value checks;
`build()` collects every problem of every section into one `ConfigError`. A field may also be
spelled by other keys, listed in its metadata (`field(metadata={"aliases": ("from",)})`): a
Python keyword cannot be a field name, and a renamed key keeps working.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import yaml

from s2s_core.errors import ConfigError

C = TypeVar("C")


_FLOAT_LITERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn `["a.b=1", "c=x"]` into the nested dict `{"a": {"b": 1}, "c": "x"}` (YAML scalars).

    Raises:
        ConfigError: for an item without `=` or with an empty key.
    """
    tree: dict[str, Any] = {}
    problems = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {pair!r} must look like key=value")
            continue
        *parents, leaf = key.strip().split(".")
        node = _section(tree, parents)
        if node is None or "" in parents or not leaf:
            problems.append(f"override {pair!r}: `{key.strip()}` conflicts with another override or has an empty part")
            continue
        try:
            node[leaf] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            problems.append(f"override {pair!r}: the value is not valid YAML")
    if problems:
        raise ConfigError(problems)
    return tree


def _section(tree: dict[str, Any], names: list[str]) -> dict[str, Any] | None:
    """The nested dict at `names` (created on the way), or None if a scalar is in the way."""
    node = tree
    for name in names:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            return None
    return node


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from a local file; errors name the file."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"config file {path} does not exist"]) from None
    except (IsADirectoryError, UnicodeDecodeError) as err:
        reason = "is a directory" if isinstance(err, IsADirectoryError) else "is not UTF-8 text"
        raise ConfigError([f"config file {path} {reason}"]) from None
    except yaml.YAMLError as err:
        raise ConfigError([f"config file {path} is not valid YAML ({str(err).splitlines()[0]})"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"config file {path} must hold a mapping, not {type(data).__name__}"])
    return data


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge two nested dicts; values of `overlay` win."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def build(cls: type[C], data: dict[str, Any]) -> C:
    """Build and validate a config of type `cls` from nested plain data.

    Raises:
        ConfigError: listing every unknown key, wrongly typed value and failed check at once.
    """
    problems: list[str] = []
    config = _build(cls, data, "", problems)
    _check(config, "", problems)
    if problems:
        raise ConfigError(_without_repeats(problems))
    return config


def layers(config_file: str | Path | None, overrides: list[str]) -> dict[str, Any]:
    """A YAML file (if any) overlaid with `key=value` overrides, as plain nested data.

    Raises:
        ConfigError: an unreadable file or a malformed override.
    """
    return merge(load_yaml(config_file) if config_file else {}, parse_overrides(overrides))


def resolve(cls: type[C], config_file: str | Path | None, overrides: list[str],
            presets: Mapping[str, Callable[[], C]] | None = None, default_preset: str | None = None,
            kind: str = "") -> C:
    """The one way a config is resolved: defaults <- preset <- YAML file <- `key=value` overrides.

    With `presets`, the `preset` key (from the file or an override; else `default_preset`) names
    the builder whose config the file and overrides overlay; `kind` names them in messages.

    Raises:
        ConfigError: an unknown preset, key, wrongly typed or invalid value, all listed together.
    """
    data = layers(config_file, overrides)
    if presets is None:
        return build(cls, data)
    name = str(data.pop("preset", default_preset))
    if name not in presets:
        raise ConfigError([f"unknown {kind + ' ' if kind else ''}preset {name!r} (valid presets: {', '.join(presets)})"])
    return build(cls, merge(to_dict(presets[name]()), data))


def to_dict(config: Any) -> dict[str, Any]:
    """The plain-data form of a config, suitable for JSON/YAML (a run writes it out)."""
    return dataclasses.asdict(config)


def _build(cls: type[C], data: Any, where: str, problems: list[str]) -> C:
    if not isinstance(data, dict):
        problems.append(f"`{where.rstrip('.')}` must be a mapping, not {data!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    aliases = {alias: f.name for f in fields.values() for alias in f.metadata.get("aliases", ())}
    data = _unaliased(data, aliases, where, problems)
    unknown = sorted(set(data) - set(fields))
    for key in unknown:
        problems.append(f"unknown key `{where}{key}` (valid keys: {', '.join(sorted([*fields, *aliases]))})")
    values = {}
    for name, raw in data.items():
        if name in fields:
            values[name] = _coerce(hints[name], raw, f"{where}{name}", problems)
    return cls(**values)


def _unaliased(data: dict[str, Any], aliases: dict[str, str], where: str, problems: list[str]) -> dict[str, Any]:
    """`data` with each alias key renamed to its field (a problem when both are given)."""
    out = dict(data)
    for alias, name in aliases.items():
        if alias not in out:
            continue
        if name in out:
            problems.append(f"`{where}{alias}` and `{where}{name}` are the same setting: give one")
        out[name] = out.pop(alias)
    return out


def _coerce(hint: Any, raw: Any, where: str, problems: list[str]) -> Any:
    """Check `raw` against a field's type, converting where it is lossless (int -> float)."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, raw, where + ".", problems)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if raw is None and type(None) in options:
            return None
        hint = next(t for t in options if t is not type(None))
        origin = typing.get_origin(hint)
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if raw not in allowed:
            problems.append(f"`{where}` must be one of {', '.join(map(repr, allowed))}, but is {raw!r}")
        return raw
    if origin is dict:  # free-form mapping (e.g. model overrides), checked by its consumer
        if not isinstance(raw, dict):
            problems.append(f"`{where}` must be a mapping, but is {raw!r}")
        return raw
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(raw, list):
            raw = [raw]
        return [_coerce(item, value, f"{where}[{i}]", problems) for i, value in enumerate(raw)]
    return _coerce_scalar(hint, raw, where, problems)


def _coerce_scalar(hint: Any, raw: Any, where: str, problems: list[str]) -> Any:
    if hint is float:
        return _coerce_float(raw, where, problems)
    if hint is Any or (isinstance(raw, hint) and not (hint is int and isinstance(raw, bool))):
        return raw
    problems.append(f"`{where}` must be {hint.__name__}, but is {raw!r}")
    return raw


def _coerce_float(raw: Any, where: str, problems: list[str]) -> Any:
    """A float field's value, which must be a finite number: YAML reads `.inf` and `.nan` as
    floats, and no option means anything with them (a length limit of inf decodes nothing)."""
    value = raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = float(raw) if abs(raw) < 2**1023 else math.inf  # float() of a huge int overflows
    elif isinstance(raw, str) and _FLOAT_LITERAL.fullmatch(raw.strip()):
        value = float(raw)  # YAML 1.1 reads `1e-3` (no dot) as a string; everyone writes it so
    if not isinstance(value, float):
        problems.append(f"`{where}` must be float, but is {raw!r}")
        return raw
    if not math.isfinite(value):
        problems.append(f"`{where}` {NOT_FINITE}, but is {raw}")
    return value


NOT_FINITE = "must be a finite number"


def _without_repeats(problems: list[str]) -> list[str]:
    """`problems` less the generic not-finite ones of fields that a section's own check also
    reports (its range, e.g. 'must be in [0, 1), but is nan', says more)."""
    named = [_field_of(p) for p in problems if NOT_FINITE not in p]
    return [p for p in problems if NOT_FINITE not in p or _field_of(p) not in named]


def _field_of(problem: str) -> str:
    """The field path a problem starts with (`a.b`), or '' when it names none."""
    return problem.split("`", 2)[1] if problem.startswith("`") and problem.count("`") >= 2 else ""


def _check(config: Any, where: str, problems: list[str]) -> None:
    """Run each section's own `problems()` check, prefixing its field paths."""
    own = getattr(config, "problems", None)
    try:
        found = own() if own is not None else []
    except TypeError:  # a wrongly typed value, already reported by _coerce
        found = []
    if found:
        problems.extend(f"`{where}{msg[1:]}" if msg.startswith("`") else f"{where}{msg}" for msg in found)
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            _check(value, f"{where}{field.name}.", problems)


def at_least(owner: Any, minimum: float, *names: str) -> list[str]:
    """Problems for the fields `names` of `owner` that are below `minimum` (for `problems()` methods)."""
    return [f"`{name}` must be >= {minimum}, but is {getattr(owner, name)}"
            for name in names if getattr(owner, name) < minimum]


def at_most(owner: Any, maximum: float, *names: str) -> list[str]:
    """Problems for the fields `names` of `owner` that are above `maximum` (for `problems()` methods)."""
    return [f"`{name}` must be <= {maximum}, but is {getattr(owner, name)}"
            for name in names if getattr(owner, name) > maximum]


def probabilities(owner: Any, *names: str) -> list[str]:
    """Problems for the fields `names` of `owner` outside [0, 1) (dropout rates and the like)."""
    return [f"`{name}` must be in [0, 1), but is {getattr(owner, name)}"
            for name in names if not 0 <= getattr(owner, name) < 1]  # NaN fails too
