"""Model cards: the YAML beside every model that says what goes in, what comes out and what it is for.

`sensitive_layers` entries are ONNX node names or shell-style patterns (`/decoder/head*`) that
every conversion (FP16, INT8, TensorRT 10 precision pinning) keeps in float32; `resolve_layers`
turns them into node names, and an entry that matches no node is an error, so a renamed layer
cannot silently lose its protection. `int8_float_layers`, where a card names them, are what the
INT8 model keeps in float instead (`ModelCard.float_layers(precision)`).

Layering inside engines/: this module imports nothing of engines/; every other module may import it.
"""
from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

from holoburn.clinical.errors import BadInput

DEFAULT_CARD = Path(__file__).parent / "models" / "burn_unet_v2.yaml"
REQUIRED_KEYS = ("model_id", "onnx", "input", "output", "classes", "normalisation", "intended_use")


class ModelCardError(BadInput):
    """A model card or its model file is missing, malformed or does not match."""


@dataclass(frozen=True)
class ModelCard:
    path: Path
    model_id: str
    onnx_path: Path
    input_name: str
    input_size: int  # side of the square model input, pixels
    multiple_of: int
    output_name: str
    classes: tuple[str, ...]
    mean: tuple[float, float, float]  # per RGB channel, 0..255 units
    std: tuple[float, float, float]
    sensitive_layers: tuple[str, ...] = ()
    # INT8 only: the layers its Q/DQ model keeps in float, instead of sensitive_layers (None: those)
    int8_float_layers: tuple[str, ...] | None = None
    # the out-of-domain threshold (clinical.assessability), calibrated on held-in frames; None: none
    min_skin_confidence: float | None = None
    demonstration: bool = False  # trained on synthetic scenes: every overlay says so
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def float_layers(self, precision: str) -> tuple[str, ...]:
        """The layers a `precision` model keeps in float: int8_float_layers for int8 where the card
        names them, else sensitive_layers."""
        if precision == "int8" and self.int8_float_layers is not None:
            return self.int8_float_layers
        return self.sensitive_layers

    def model_sha256(self) -> str:
        return file_sha256(self.onnx_path)

    def sibling(self, name: str) -> Path:
        """A file named in the card, next to the card."""
        return self.path.parent / name


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_card(path: str | Path | None = None) -> ModelCard:
    """Read and check a model card; errors name the file and what is wrong."""
    path = Path(path) if path else DEFAULT_CARD
    if not path.is_file():
        raise ModelCardError(f"model card not found: {path} (pass --model PATH/TO/CARD.yaml)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ModelCardError(f"model card {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ModelCardError(f"model card {path} must be a YAML mapping")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise ModelCardError(f"model card {path} lacks {', '.join(missing)}")
    try:
        inp, out, norm = raw["input"], raw["output"], raw["normalisation"]
        card = ModelCard(
            path=path,
            model_id=str(raw["model_id"]),
            onnx_path=path.parent / raw["onnx"],
            input_name=str(inp["name"]),
            input_size=int(inp["size"]),
            multiple_of=int(inp.get("multiple_of", 1)),
            output_name=str(out["name"]),
            classes=tuple(raw["classes"]),
            mean=tuple(float(v) for v in norm["mean"]),
            std=tuple(float(v) for v in norm["std"]),
            sensitive_layers=tuple(raw.get("sensitive_layers") or ()),
            int8_float_layers=None if raw.get("int8_float_layers") is None else tuple(raw["int8_float_layers"]),
            min_skin_confidence=_optional_float((raw.get("assessability") or {}).get("min_skin_confidence")),
            demonstration=bool(raw.get("demonstration", False)),
            raw=raw,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelCardError(f"model card {path}: bad or missing field {exc}") from None
    if len(card.mean) != 3 or len(card.std) != 3 or min(card.std) <= 0:
        raise ModelCardError(f"model card {path}: normalisation needs 3 means and 3 positive stds")
    if card.input_size % card.multiple_of:
        raise ModelCardError(
            f"model card {path}: input size {card.input_size} is not a multiple of {card.multiple_of}"
        )
    if not card.onnx_path.is_file():
        raise ModelCardError(f"model file {card.onnx_path} named by card {path} does not exist")
    return card


def resolve_layers(model, patterns: Iterable[str], card: ModelCard | None = None) -> list[str]:
    """Node names of `model` (an onnx.ModelProto) matched by `patterns` (names or fnmatch patterns), in pattern order."""
    names = [n.name for n in model.graph.node if n.name]
    chosen: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if n == pattern or fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            where = f"card {card.path}" if card is not None else "the sensitive layer list"
            sample = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
            raise ModelCardError(
                f"{where} names sensitive layer {pattern!r}, but model {card.onnx_path if card else ''} has no such node "
                f"(nodes: {sample}); fix sensitive_layers in the card"
            )
        chosen.extend(h for h in hits if h not in chosen)
    return chosen
