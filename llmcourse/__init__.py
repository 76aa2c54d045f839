"""llmcourse: every component of a large language model, implemented, tested and compared.

The package is the book's toolbox. Import ladder (lower floors never import higher ones):

1. ``config``, ``kernels`` (the attention-kernel registry), ``auxiliary`` (auxiliary losses and
   statistics), ``counting``, ``masks``, ``data``, ``tokenizers``, ``progress``, ``notebook``
2. ``norms``, ``ffn``, ``positions``, ``efficient_attention``, ``objectives``, ``denoising``, ``checkpoint``
3. ``attention``, ``moe``
4. ``blocks``
5. ``models``
6. ``train``, ``generate``, ``hf``
7. ``benchmarks``, ``experiments``

``tests/test_ladder.py`` holds the same table and fails on an upward import.
"""

from .config import ModelConfig
from .data import Corpus, LMBatches, load_corpus
from .generate import generate, generate_seq2seq
from .models import DecoderLM, EncoderDecoderLM, build_model, to_prefix_decoder
from .tokenizers import BPETokenizer, CharTokenizer
from .train import History, TrainConfig, Trainer

__all__ = [
    "ModelConfig", "Corpus", "LMBatches", "load_corpus", "generate", "generate_seq2seq", "DecoderLM",
    "EncoderDecoderLM", "build_model", "to_prefix_decoder", "BPETokenizer", "CharTokenizer", "History", "TrainConfig", "Trainer",
]
__version__ = "0.1.0"
