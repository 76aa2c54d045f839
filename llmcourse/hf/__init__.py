"""Hugging Face ``transformers`` interop: course models from HF models and checkpoints, and back.

Shape legend: ``B`` batch, ``T`` length, ``V`` vocab.

- :func:`from_hf` (a ``transformers`` model -> the llmcourse model with the same weights),
- :func:`to_hf` (an llmcourse model -> the matching ``transformers`` class, ready for
  ``save_pretrained`` and ``generate``),
- :func:`from_pretrained` (a hub name such as ``"gpt2"`` or a saved folder -> the llmcourse model).

Each family is one module of data (:class:`~llmcourse.hf.base.Converter`: config
mappings both ways and a declarative name map), listed in :data:`CONVERTERS`;
:mod:`llmcourse.hf.base` holds the one loader that applies a name map either way.
Decoders are called as ``m(input_ids)``, encoder-decoders as
``m(input_ids, decoder_input_ids)``; both return logits ``(B, T, V)``.
``transformers`` is imported only by :func:`to_hf` and :func:`from_pretrained`.
"""

from __future__ import annotations

import importlib
import os

from torch import nn

from .base import Converter, convert_from_hf, convert_to_hf

# model_type -> module in this package. A module defines CONVERTER (a declarative map, both directions)
# or, for families not yet written as data, only convert(hf_model) (from_hf only).
# The order is to_hf's order of preference.
CONVERTERS: dict[str, str] = {
    "llama": "llama",
    "gpt2": "gpt2",
    "t5": "t5",
    "gpt_neox": "gpt_neox",
    "bloom": "bloom",
    "opt": "opt",
    "mixtral": "mixtral",
    "switch_transformers": "switch_transformers",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma": "gemma",
    "falcon": "falcon",
}


def _module(model_type: str):
    if model_type not in CONVERTERS:
        raise ValueError(
            f"llmcourse.hf does not know model_type={model_type!r}; it converts {', '.join(sorted(CONVERTERS))}."
        )
    return importlib.import_module(f".{CONVERTERS[model_type]}", __name__)


def converter(model_type: str) -> Converter:
    """The :class:`~llmcourse.hf.base.Converter` of a ``transformers`` ``model_type``."""
    conv = getattr(_module(model_type), "CONVERTER", None)
    if conv is None:
        declarative = ", ".join(name for name in CONVERTERS if hasattr(_module(name), "CONVERTER"))
        raise ValueError(
            f"model_type={model_type!r} converts from Hugging Face only (its module has no declarative name map), "
            f"so to_hf cannot build it; to_hf builds {declarative}."
        )
    return conv


def from_hf(model: nn.Module) -> nn.Module:
    """The llmcourse model equal to a ``transformers`` model (same weights, same logits)."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise ValueError(f"from_hf expects a transformers model with a config.model_type, got {type(model).__name__}.")
    module = _module(model_type)
    conv = getattr(module, "CONVERTER", None)
    return convert_from_hf(conv, model) if conv is not None else module.convert(model)


def to_hf(model: nn.Module, model_type: str | None = None) -> nn.Module:
    """The ``transformers`` model equal to an llmcourse model (same weights, same logits).

    ``model_type`` picks the family (``"llama"``, ``"gpt2"``, ``"t5"``, ``"gpt_neox"``,
    ``"bloom"``, ``"opt"``, ``"mixtral"``, ``"switch_transformers"``, ``"qwen2"``, ``"qwen3"``,
    ``"gemma"``, ``"falcon"``); by default the first in :data:`CONVERTERS` whose HF
    class can express ``model.config``. A config no family can express raises
    ``ValueError`` with each family's reason, each naming the config field.
    Dropout is not carried over (the HF model is returned in eval mode).
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "arch"):
        raise ValueError(f"to_hf converts an llmcourse model (DecoderLM or EncoderDecoderLM), got {type(model).__name__}.")
    if model_type is not None:
        return convert_to_hf(converter(model_type), model)
    reasons = []
    for name in CONVERTERS:
        conv = getattr(_module(name), "CONVERTER", None)
        if conv is None:  # from_hf only
            continue
        try:
            conv.hf_config(config)
        except ValueError as e:
            reasons.append(f"{name}: {e}")
            continue
        return convert_to_hf(conv, model)
    raise ValueError("no transformers class expresses this model's config. " + " ".join(reasons))


def from_pretrained(name_or_path: str | os.PathLike, **kwargs) -> nn.Module:
    """The llmcourse model of a Hugging Face checkpoint: a hub name (``"gpt2"``, ``"google-t5/t5-small"``) or a folder.

    Reads the HF config first, so an unsupported architecture fails before any
    weights load; then loads the weights with ``transformers``
    (``AutoModelForCausalLM`` or ``AutoModelForSeq2SeqLM``, which also reads
    older checkpoint layouts), and converts with :func:`from_hf`. ``kwargs`` go to
    ``from_pretrained`` (``revision=``, ``cache_dir=``, ``local_files_only=``...).
    """
    import transformers

    name = os.fspath(name_or_path)
    local = os.path.isdir(os.path.expanduser(name))
    if not local and (os.path.exists(name) or name.startswith(("/", "./", "../", "~")) or name.count("/") > 1):
        what = "is a file, not a folder" if os.path.exists(name) else "does not exist"
        raise FileNotFoundError(
            f"{name} {what}; from_pretrained needs a folder holding config.json and the weights "
            "(model.safetensors), as save_pretrained writes it, or a hub name such as 'gpt2'."
        )
    path = os.path.expanduser(name) if local else name
    if local and not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{name} has no config.json; from_pretrained reads folders written by save_pretrained.")
    try:
        hf_config = transformers.AutoConfig.from_pretrained(path, **kwargs)
    except OSError as e:
        raise FileNotFoundError(f"could not read the config of {name!r} ({e}). Check the name, or the network for a hub name.") from e
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in CONVERTERS:
        archs = ", ".join(getattr(hf_config, "architectures", None) or []) or "unknown"
        raise ValueError(
            f"{name!r} is a {model_type!r} model (architectures: {archs}), which llmcourse.hf does not convert; "
            f"supported model types: {', '.join(sorted(CONVERTERS))}."
        )
    conv = getattr(_module(model_type), "CONVERTER", None)
    if conv is not None:
        conv.model_config(hf_config)  # an unsupported variant fails before the weights load
    auto = transformers.AutoModelForSeq2SeqLM if hf_config.is_encoder_decoder else transformers.AutoModelForCausalLM
    try:
        hf_model = auto.from_pretrained(path, config=hf_config, **kwargs)
    except OSError as e:
        raise FileNotFoundError(f"could not load the weights of {name!r}: {e}") from e
    return from_hf(hf_model)


__all__ = ["CONVERTERS", "converter", "from_hf", "to_hf", "from_pretrained"]
