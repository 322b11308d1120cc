"""Which ONNX file carries a card's model at a given precision."""
from __future__ import annotations

from pathlib import Path

from .card import ModelCard


def model_for_precision(card: ModelCard, precision: str) -> Path:
    if precision == "fp32":
        return card.onnx_path
    raise NotImplementedError(f"precision {precision} is not built yet for {card.model_id}")
