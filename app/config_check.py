"""`holoburn config check FILE`: every unknown key and bad value in a config file, with its path
in the file and its line, before a run finds them one at a time.

Keys and types are judged by `config.problems` (the loader's own rules, against the bundled
defaults); on top of that each known setting's value is checked against what the pipeline accepts
(lane names, backends, precisions, ranges), and duplicate keys, which YAML otherwise resolves
silently to the last one, are reported.
"""
from __future__ import annotations

import argparse
import math
from importlib import resources
from pathlib import Path

import yaml

from holoburn.app.config import defaults, problems, read_text


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
        "scheduler.worker_threads": _number(1, whole=True),
        "scheduler.distributed_idle_ms": _number(0),
        "triage.calm_frames": _number(0, whole=True),
        "triage.partial_tbsa_threshold_pct": _number(0, 100),
        "triage.min_share_of_skin": _number(0, 1),
        "inference.backend": _one_of("auto", *BACKEND_MODULES),
        "inference.precision": _one_of(*PRECISIONS),
        "inference.threads": _number(1, whole=True),
        "overlay.alpha": _number(0, 1),
        "video_sink.fourcc": _fourcc,
        "results.save_masks": _text,
        "results.record_gxf": _text,
        "metrics.host": _text,
        "metrics.port": _number(0, 65535, whole=True),
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


def key_lines(text: str) -> tuple[dict, list[tuple[str, int, int]]]:
    """Map each dotted key path to its 1-based line in `text`; also list duplicate keys as
    (path, first line, repeated line). Raises yaml.YAMLError for text that is not YAML."""
    lines, duplicates = {}, []

    def walk(node, prefix):
        if not isinstance(node, yaml.MappingNode):
            return
        seen = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            path = f"{prefix}{key_node.value}"
            line = key_node.start_mark.line + 1
            if path in seen:
                duplicates.append((path, seen[path], line))
            seen[path] = line
            lines[path] = line
            walk(value_node, path + ".")

    walk(yaml.compose(text, Loader=yaml.SafeLoader), "")
    return lines, duplicates


def _line_of(path: str, lines: dict) -> int | None:
    """The line of `path`, or of its nearest enclosing section that is in the file."""
    while path:
        if path in lines:
            return lines[path]
        path = path.rpartition(".")[0]
    return None


def _read_text(name: str) -> tuple[str, str]:
    """(label, text) of a file path, or of a bundled preset by name (as `--config` resolves it)."""
    path = Path(name)
    if not path.exists():
        bundled = resources.files("holoburn.configs").joinpath(name)
        if bundled.is_file():
            return f"{name} (bundled preset)", bundled.read_text(encoding="utf-8")
    return str(path), read_text(path)  # ConfigError naming the file: missing, a folder, binary, not UTF-8


def check_text(text: str) -> list[tuple[int | None, str]]:
    """Every problem in a config file's text, as (line or None, 'dotted.path: message'), in file order."""
    try:
        lines, duplicates = key_lines(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or str(exc)
        return [(mark.line + 1 if mark else None, f"not valid YAML: {reason}")]
    if data is None:
        return []
    if not isinstance(data, dict):
        return [(1, f"the file must hold a mapping of sections, got {type(data).__name__}")]
    found = [(second, f"{path}: duplicate key (first on line {first}); YAML keeps only the last")
             for path, first, second in duplicates]
    type_problems = problems(data)
    typed = {message.partition(": ")[0] for message in type_problems}
    for message in type_problems + value_problems(data, skip=typed):
        found.append((_line_of(message.partition(": ")[0], lines), message))
    return sorted(found, key=lambda item: (item[0] is None, item[0] or 0))


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="config_action", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="report every unknown key and bad value in a config file",
                               description="Report every unknown key and bad value in FILE with its path and "
                                           "line; exit 1 if there are any.")
    check.add_argument("file", metavar="FILE", help="YAML config file (or a bundled preset name, e.g. jetson-orin.yaml)")


def run_config(args) -> int:
    label, text = _read_text(args.file)
    found = check_text(text)
    for line, message in found:
        print(f"{label}:{line}: {message}" if line else f"{label}: {message}")
    if found:
        print(f"{label}: {len(found)} problem{'s' if len(found) != 1 else ''}")
        return 1
    print(f"{label}: ok")
    return 0
