"""Configuration: the bundled defaults, merged with a user's YAML file and command-line values.

One loader for every command. Unknown keys and values of the wrong type are errors that name
their path in the file (`source.lane`), never silently ignored.
"""
from __future__ import annotations

import copy
import math
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
        data = parse_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


#: values a config may expand to through YAML aliases (the shipped defaults hold about 200)
MAX_VALUES = 100_000


def parse_yaml(text: str):
    """The data of a YAML text (None for none); yaml.YAMLError for text that is not YAML, and
    for text PyYAML would fail on otherwise or that would hang whoever walks its data: nesting
    deeper than Python's recursion limit, a value Python cannot hold (an integer of over 4300
    digits, the date 2020-13-45), aliases that expand to more than MAX_VALUES values (a "billion
    laughs") or that make a value contain itself."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _count_values(node, {})
        return loader.construct_document(node)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply to read") from None
    except ValueError as exc:  # what PyYAML's int and timestamp constructors raise
        raise yaml.YAMLError(f"a value cannot be read: {exc}") from None
    finally:
        loader.dispose()


def _count_values(node, counted: dict) -> int:
    """Values under `node` with every alias expanded (each shared node counted once per use)."""
    if id(node) in counted:
        if counted[id(node)] is None:
            raise yaml.YAMLError(f"line {node.start_mark.line + 1}: an alias makes a value contain itself")
        return counted[id(node)]
    counted[id(node)] = None  # being counted
    children = node.value if isinstance(node, yaml.SequenceNode) else (
        [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
    total = 1 + sum(_count_values(child, counted) for child in children)
    if total > MAX_VALUES:
        raise yaml.YAMLError(f"line {node.start_mark.line + 1}: its aliases expand to more than {MAX_VALUES} values "
                             "(a config holds a few hundred)")
    counted[id(node)] = total
    return total


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
    """Defaults <- file <- overrides (dotted keys, e.g. {"inference.backend": "onnxruntime"}).
    The file and every override go through the same checks as `holoburn config check`: a bad
    value fails here, naming it, not later in an operator."""
    config = defaults()
    if path:
        user = read_yaml(path)
        found = problems(user)
        found += value_problems(user, skip={p.split(":")[0] for p in found})
        if found:
            raise ConfigError(f"config file {path}:\n  " + "\n  ".join(found))
        config = merge(config, user)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if section not in config or key not in config[section]:
            raise ConfigError(f"unknown setting {dotted}")
        found = value_problems({section: {key: value}})
        if found:
            raise ConfigError(f"option {dotted}: " + "; ".join(f.partition(": ")[2] for f in found))
        config[section][key] = value
    return config


# ----------------------------------------------------------------------------- values


def _one_of(*choices, upper=False):
    def check(value):
        if not isinstance(value, str):
            return f"expected one of {', '.join(choices)}, got {value!r}"
        if (value.upper() if upper else value) not in choices:
            return f"{value!r} is not one of {', '.join(choices)}"
        return None
    return check


def _number(low=None, high=None, *, whole=False, low_open=False):
    def check(value):
        # settings whose default is null get no type check from `problems`, so check it here
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {value!r}"
        if not math.isfinite(value):
            return f"{value!r} must be a finite number"
        if whole and not float(value).is_integer():
            return f"{value!r} must be a whole number"
        if low is not None and (value <= low if low_open else value < low):
            return f"{value!r} must be {'above' if low_open else 'at least'} {low:g}"
        if high is not None and value > high:
            return f"{value!r} must be at most {high:g}"
        return None
    return check


def _source_location(value):
    if value == "":
        return None
    kind, sep, location = value.partition(":")
    if not sep or not kind or not location:
        return f"{value!r} is not KIND:LOCATION (e.g. video:burns.mp4)"
    return None


def _text(value):
    return None if isinstance(value, str) else f"expected text, got {value!r}"


def _one_of_bool(value):
    return None if isinstance(value, bool) else f"expected true or false, got {value!r}"


def _fourcc(value):
    return None if len(value) == 4 else f"{value!r} must be four characters (e.g. mp4v)"


def _value_rules() -> dict:
    """dotted path -> check(value) returning a message or None. Imported lazily: the lanes,
    backends and body regions are defined where they are used, not repeated here."""
    from holoburn.clinical.burn_size import RULE_OF_NINES
    from holoburn.clinical.triage import Lane
    from holoburn.engines.backend import BACKEND_MODULES, PRECISIONS
    from holoburn.media.camera import PIXEL_FORMATS

    # a rule for a setting the defaults lack is never applied (`problems` reports the key instead)
    return {
        "source.location": _source_location,
        "source.lane": _one_of(*(lane.name for lane in Lane), upper=True),
        "source.max_frames": _number(1, whole=True),
        "source.body_region": _one_of(*sorted(RULE_OF_NINES)),
        "source.age_years": _number(0, 130),
        "source.cm2_per_pixel": _number(0, low_open=True),
        "camera.width": _number(1, whole=True),
        "camera.height": _number(1, whole=True),
        "camera.fps": _number(0, low_open=True),
        "camera.pixel_format": _one_of(*PIXEL_FORMATS),
        "camera.retry_initial_s": _number(0, low_open=True),
        "camera.retry_max_s": _number(0, low_open=True),
        "gxf.fps": _number(0, low_open=True),
        "image.fps": _number(0, low_open=True),
        "scheduler.worker_threads": _number(1, 256, whole=True),
        "scheduler.distributed_idle_ms": _number(0),
        "triage.calm_frames": _number(0, whole=True),
        "triage.escalate_after": _number(1, whole=True),
        "triage.escalate_window": _number(1, 1000, whole=True),
        "assess.min_colour": _number(0, 255),
        "assess.dark_luma": _number(0, 255),
        "assess.bright_share": _number(0, 1),
        "assess.min_sharpness": _number(0),
        "assess.min_skin_share": _number(0, 1),
        "assess.min_skin_confidence": _number(0, 1),
        "assess.min_pixel_confidence": _number(0, 1),
        "assess.min_region_px": _number(0, whole=True),
        "assess.min_frame_side": _number(1, whole=True),
        "triage.partial_tbsa_threshold_pct": _number(0, 100),
        "triage.min_share_of_skin": _number(0, 1),
        "inference.backend": _one_of("auto", *BACKEND_MODULES),
        "inference.precision": _one_of(*PRECISIONS),
        "inference.threads": _number(1, whole=True),
        "overlay.alpha": _number(0, 1),
        "video_sink.fourcc": _fourcc,
        "results.save_masks": _text,
        "results.record_gxf": _text,
        "results.source_map": _one_of_bool,
        "metrics.host": _text,
        "metrics.port": _number(0, 65535, whole=True),
        "gpu.isolation": _one_of("auto", "process", "none"),
        "gpu.routine_processes": _number(1, 64, whole=True),
        "gpu.routine_sm_percent": _number(1, 100, whole=True),
        "gpu.routine_mps_priority": _one_of("normal", "below_normal"),
    }


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def value_problems(config: dict, skip: set | frozenset = frozenset()) -> list[str]:
    """Bad values of known settings in `config` (a user's file, not merged), each with its path.

    A null where the default is not null is bad too: the loader would pass it on to an operator
    that needs a value. Paths in `skip` (already reported for their type) are left out.
    """
    rules = _value_rules()
    reference = _flatten(defaults())
    found = []
    for path, value in _flatten(config).items():
        if path in skip or path not in reference:
            continue
        if value is None:
            if reference[path] is not None:
                found.append(f"{path}: needs a value (default {reference[path]!r}), got null")
            continue
        check = rules.get(path)
        message = check(value) if check else None
        if message:
            found.append(f"{path}: {message}")
    return found
