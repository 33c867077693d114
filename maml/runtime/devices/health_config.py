"""Health thresholds: their defaults (from the seeds), and where a user changes them.

`<config dir>/config.toml` (the config dir is $MAML_CONFIG_DIR, else platformdirs'
user_config_dir("maml")), table `[health]`:

    [health]
    temperature_warning = 83      # °C
    temperature_critical = 85
    temperature_shutdown = 90
    memory_warning = "90%"        # share of the device's memory in use: "90%", 90 or 0.9
    memory_critical = "95%"
    hang_utilization = 99         # %
    hang_seconds = "30s"          # a duration, or seconds

A document's `health:` front-matter key (same names; `temperature: {warning: 80}` also works)
overrides the file for that run. An unknown name or an impossible order (warning above
critical) is a UsageError naming where it came from, so a typo never silently does nothing.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from maml.errors import UsageError
from maml.vocabulary import parse_duration


@dataclass(frozen=True, slots=True)
class Thresholds:
    temperature_warning: float = 83.0
    temperature_critical: float = 85.0
    temperature_shutdown: float = 90.0
    memory_warning: float = 0.90        # share of total memory in use
    memory_critical: float = 0.95
    hang_utilization: float = 99.0      # percent
    hang_seconds: float = 30.0


_NAMES = tuple(f.name for f in fields(Thresholds))


def config_path() -> Path:
    explicit = os.environ.get("MAML_CONFIG_DIR")
    if explicit:
        return Path(explicit) / "config.toml"
    import platformdirs

    return Path(platformdirs.user_config_dir("maml")) / "config.toml"


def load_thresholds(path: str | os.PathLike[str] | None = None, *,
                    overrides: Any = None) -> Thresholds:
    """Defaults, then `[health]` from the config file if it exists, then `overrides`
    (a document's `health:` mapping)."""
    file = Path(path) if path is not None else config_path()
    thresholds = Thresholds()
    if file.is_file():
        try:
            with open(file, "rb") as handle:
                table = tomllib.load(handle).get("health", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read the config file: {exc}", path=str(file)) from exc
        thresholds = thresholds_from_mapping(table, thresholds, source=str(file))
    if overrides:
        thresholds = thresholds_from_mapping(overrides, thresholds, source="front matter 'health:'")
    return thresholds


def thresholds_from_mapping(mapping: Any, base: Thresholds = Thresholds(), *,
                            source: str = "health settings") -> Thresholds:
    if not isinstance(mapping, dict):
        raise UsageError(f"health settings must be a mapping, not {type(mapping).__name__}",
                         path=source)
    changes: dict[str, float] = {}
    for name, value in _flatten(mapping).items():
        if name not in _NAMES:
            raise UsageError(f"unknown health setting {name!r}; known: {', '.join(_NAMES)}",
                             path=source)
        try:
            changes[name] = _convert(name, value)
        except ValueError as exc:
            raise UsageError(f"health setting {name!r}: {exc}", path=source) from exc
    thresholds = replace(base, **changes)
    _check_order(thresholds, source)
    return thresholds


def _flatten(mapping: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{inner}": v for inner, v in value.items()})
        else:
            flat[str(key)] = value
    return flat


def _convert(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, not {value!r}")
    if name == "hang_seconds":
        return parse_duration(value)
    if isinstance(value, str):
        text = value.strip()
        number = float(text.removesuffix("%"))
        percent = text.endswith("%")
    elif isinstance(value, (int, float)):
        number, percent = float(value), False
    else:
        raise ValueError(f"expected a number, not {value!r}")
    if name.startswith("memory_"):
        return number / 100 if percent or number > 1 else number
    return number


def _check_order(t: Thresholds, source: str) -> None:
    problems = []
    if not t.temperature_warning <= t.temperature_critical <= t.temperature_shutdown:
        problems.append("temperatures must rise: warning <= critical <= shutdown")
    if not 0 < t.memory_warning <= t.memory_critical <= 1:
        problems.append("memory shares must satisfy 0 < warning <= critical <= 100%")
    if not 0 < t.hang_utilization <= 100 or t.hang_seconds <= 0:
        problems.append("hang_utilization must be in (0, 100] and hang_seconds above 0")
    if problems:
        raise UsageError("; ".join(problems) + f" (got {t})", path=source)
