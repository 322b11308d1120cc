"""Label values of an imported dataset, and the user's map from a source's labels to them.

The values and why burn_unspecified exists: see the package docstring (holoburn.app.datasets).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from holoburn.clinical.depth import BACKGROUND, CLASS_NAMES
from holoburn.clinical.errors import BadConfig

BURN_UNSPECIFIED = 6
UNKNOWN = 255

#: label value in DEST/labels -> its name
DATASET_CLASSES: dict[int, str] = {**dict(enumerate(CLASS_NAMES)), BURN_UNSPECIFIED: "burn_unspecified", UNKNOWN: "unknown"}
#: name -> label value: what a line of the label map may map to
TARGETS: dict[str, int] = {name: value for value, name in DATASET_CLASSES.items()}
#: what a source label of this name is without a line in the map
DEFAULT_BY_NAME: dict[str, int] = {**TARGETS, "ignore": UNKNOWN, "unannotated": BACKGROUND}

#: what the dataset.json says about each value
MEANINGS: dict[str, str] = {
    "burn_unspecified": "burn of some depth, depth not given (burn / no-burn source): burn for the "
                        "burn / no-burn decision (any burn = 2-6), no depth target",
    "unknown": "not known or not to be learned: ignored by a trainer",
}


@dataclass(frozen=True)
class SourceLabel:
    """One label as a source dataset writes it: a value (mask pixel value, category id), a name
    (dataset.json, COCO category, CVAT label), or both."""

    value: int | None = None
    name: str | None = None

    def described(self, pixels: int) -> str:
        """For a message: `'burn' (value 1, 40 px)`, `'burn' (40 px)` or `7 (40 px)`."""
        if self.name is not None and self.value is not None:
            return f"{self.name!r} (value {self.value}, {pixels} px)"
        return f"{self.name!r} ({pixels} px)" if self.name is not None else f"{self.value} ({pixels} px)"

    @property
    def key(self) -> str:
        """How dataset.json lists it in the label map: its name, else its value."""
        return self.name if self.name is not None else str(self.value)


@dataclass
class LabelMap:
    """Source label -> label value of DEST/labels; a line by name wins over one by value, and
    both over the defaults (package docstring)."""

    by_name: dict[str, int] = field(default_factory=dict)
    by_value: dict[int, int] = field(default_factory=dict)
    path: Path | None = None

    def class_of(self, label: SourceLabel) -> int | None:
        """The label value for `label`, or None where nothing maps it."""
        if label.name is not None and label.name in self.by_name:
            return self.by_name[label.name]
        if label.value is not None and label.value in self.by_value:
            return self.by_value[label.value]
        if label.name is not None:
            return DEFAULT_BY_NAME.get(label.name)
        return label.value if label.value in DATASET_CLASSES else None


def load_label_map(path: Path | None) -> LabelMap:
    """The `--labels` YAML: a mapping of source label name or value -> a name of TARGETS.
    None gives the defaults alone. BadConfig names the file, the key and the value."""
    if path is None:
        return LabelMap()
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadConfig(f"cannot read the label map {path}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BadConfig(f"the label map {path} is not YAML: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise BadConfig(f"the label map {path} must be a mapping of source label -> class name, "
                        f"one per line (e.g. 'burn: burn_unspecified')")
    allowed = ", ".join(TARGETS)
    labels = LabelMap(path=path)
    for key, target in data.items():
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise BadConfig(f"{path}: the key {key!r} is neither a label name nor a value; "
                            f"write names in quotes (YAML reads yes/no/on/off as true/false)")
        if not isinstance(target, str) or target not in TARGETS:
            raise BadConfig(f"{path}: {key!r} maps to {target!r}, which is not one of: {allowed}")
        if isinstance(key, int):
            labels.by_value[key] = TARGETS[target]
        else:
            labels.by_name[key] = TARGETS[target]
            if key.strip().isdigit():  # "255" quoted is still the value 255
                labels.by_value.setdefault(int(key), TARGETS[target])
    return labels
