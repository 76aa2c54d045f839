"""Convert Hugging Face ``transformers`` models into the equivalent llmcourse models.

``from_hf(model)`` reads ``model.config.model_type`` and dispatches to the
converter registered for it (one module per model family in this package).
The result is an llmcourse model with the same weights: decoders are called as
``m(input_ids)``, encoder-decoders as ``m(input_ids, decoder_input_ids)``, and
both return logits ``(B, T, V)``. ``transformers`` is needed only to *have*
such a model; this package imports nothing from it.
"""

from __future__ import annotations

import importlib
from typing import Callable

from torch import nn

# model_type -> module in this package that defines ``convert(hf_model) -> nn.Module``
CONVERTERS: dict[str, str] = {
    "gpt2": "gpt2",
    "t5": "t5",
    "llama": "llama",
    "gpt_neox": "gpt_neox",
    "bloom": "bloom",
}


def _converter(model_type: str) -> Callable[[nn.Module], nn.Module]:
    if model_type not in CONVERTERS:
        raise ValueError(
            f"from_hf does not know model_type={model_type!r}; it converts {', '.join(sorted(CONVERTERS))}."
        )
    module = importlib.import_module(f".{CONVERTERS[model_type]}", __name__)
    return module.convert


def from_hf(model: nn.Module) -> nn.Module:
    """The llmcourse model equal to a ``transformers`` model (same weights, same logits)."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise ValueError(f"from_hf expects a transformers model with a config.model_type, got {type(model).__name__}.")
    return _converter(model_type)(model)
