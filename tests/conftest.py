"""Shared fixtures: a small corpus and tiny configs, so every test runs in seconds."""

import pytest
import torch

from llmcourse import ModelConfig
from llmcourse.tokenizers import CharTokenizer

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n"
) * 20


@pytest.fixture
def text() -> str:
    return TEXT


@pytest.fixture
def tokenizer() -> CharTokenizer:
    return CharTokenizer.from_text(TEXT)


@pytest.fixture
def tiny_config(tokenizer) -> ModelConfig:
    return ModelConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_heads=4, n_layers=2, max_seq_len=32)


@pytest.fixture
def token_ids(tokenizer) -> torch.Tensor:
    return torch.tensor(tokenizer.encode(TEXT), dtype=torch.long)
