"""`holoburn config check FILE`: every unknown key and bad value in a config file, with its path
in the file and its line, before a run finds them one at a time.

Keys and types are judged by `config.problems` (the loader's own rules, against the bundled
defaults); on top of that each known setting's value is checked against what the pipeline accepts
(lane names, backends, precisions, ranges), and duplicate keys, which YAML otherwise resolves
silently to the last one, are reported.
"""
from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import yaml

from holoburn.app.config import parse_yaml, problems, read_text, value_problems


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
        data = parse_yaml(text)  # first: it refuses what would hang or crash key_lines
        lines, duplicates = key_lines(text)
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
