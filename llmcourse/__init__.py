"""llmcourse: every component of a large language model, implemented, tested and compared.

The package is the book's toolbox. Import ladder (lower floors never import higher ones):

1. ``config``, ``masks``, ``data``, ``tokenizers``, ``progress``
2. ``norms``, ``ffn``, ``positions``, ``efficient_attention``, ``objectives``, ``checkpoint``
3. ``attention``
4. ``blocks``
5. ``models``
6. ``train``, ``generate``, ``hf``
7. ``benchmarks``, ``experiments``
"""

from .config import ModelConfig
from .data import Corpus, LMBatches, load_corpus
from .generate import generate, generate_seq2seq
from .models import DecoderLM, EncoderDecoderLM, build_model, to_prefix_decoder
from .tokenizers import CharTokenizer
from .train import History, TrainConfig, Trainer

__all__ = [
    "ModelConfig", "Corpus", "LMBatches", "load_corpus", "generate", "generate_seq2seq", "DecoderLM",
    "EncoderDecoderLM", "build_model", "to_prefix_decoder", "CharTokenizer", "History", "TrainConfig", "Trainer",
]
__version__ = "0.1.0"
