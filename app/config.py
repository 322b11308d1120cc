"""Configuration: the bundled defaults, merged with a user's YAML file and command-line values.

One loader for every command. Unknown keys and values of the wrong type are errors that name
their path in the file (`source.lane`), never silently ignored.
"""
from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import yaml

from holoburn.clinical.errors import BadConfig

DEFAULTS_FILE = "holoburn.yaml"


class ConfigError(BadConfig):
    """A config file cannot be read or holds unknown keys or bad values; the message names the file."""


def _bundled(name: str) -> dict:
    text = resources.files("holoburn.configs").joinpath(name).read_text()
    return yaml.safe_load(text) or {}


def defaults() -> dict:
    return _bundled(DEFAULTS_FILE)


def read_text(path: str | Path) -> str:
    """The text of a config file; ConfigError naming the file when it is missing, a folder,
    unreadable, binary or not UTF-8."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder: give the path of a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (check the path, or name a bundled preset)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if b"\x00" in data:
        raise ConfigError(f"config file {path} is a binary file, not YAML text: give the path of a .yaml file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start} cannot be decoded): "
                          "save it as UTF-8") from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        bundled = resources.files("holoburn.configs").joinpath(str(path))
        if bundled.is_file():  # a preset by name, e.g. replay-validation.yaml
            return yaml.safe_load(bundled.read_text(encoding="utf-8")) or {}
    text = read_text(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def problems(config: dict, reference: dict | None = None, prefix: str = "") -> list[str]:
    """Every unknown key and wrongly typed value in `config`, each with its dotted path."""
    reference = defaults() if reference is None else reference
    found = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        if key not in reference:
            found.append(f"{path}: unknown key (known here: {', '.join(sorted(reference))})")
            continue
        expected = reference[key]
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                found.append(f"{path}: expected a section (mapping), got {type(value).__name__}")
            else:
                found.extend(problems(value, expected, path + "."))
        elif expected is not None and value is not None:
            ok_types = (int, float) if isinstance(expected, (int, float)) and not isinstance(expected, bool) else type(expected)
            if isinstance(value, bool) and not isinstance(expected, bool) or not isinstance(value, ok_types):
                found.append(f"{path}: expected {type(expected).__name__}, got {value!r}")
    return found


def merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Defaults <- file <- overrides (dotted keys, e.g. {"inference.backend": "onnxruntime"})."""
    config = defaults()
    if path:
        user = read_yaml(path)
        found = problems(user)
        if found:
            raise ConfigError(f"config file {path}:\n  " + "\n  ".join(found))
        config = merge(config, user)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if section not in config or key not in config[section]:
            raise ConfigError(f"unknown setting {dotted}")
        config[section][key] = value
    return config
