import torch
import pytest

from llmcourse.data import LMBatches, corpus_text, load_corpus, markdown_play_to_text
from llmcourse.tokenizers import BPETokenizer, CharTokenizer


def test_own_text_file_is_a_corpus(tmp_path, text):
    path = tmp_path / "mine.txt"
    path.write_text(text, encoding="utf-8")
    corpus = load_corpus(path, val_fraction=0.1)
    assert corpus.tokenizer.decode(torch.cat([corpus.train_ids, corpus.val_ids]).tolist()) == text
    assert len(corpus.val_ids) == int(len(text) * 0.1)


def test_split_is_deterministic(tmp_path, text):
    path = tmp_path / "mine.txt"
    path.write_text(text, encoding="utf-8")
    a, b = load_corpus(path), load_corpus(path)
    assert torch.equal(a.train_ids, b.train_ids) and torch.equal(a.val_ids, b.val_ids)


def test_missing_and_empty_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="is empty"):
        load_corpus(empty)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_corpus(binary)


def test_builtin_shakespeare_corpus():
    text = corpus_text("shakespeare", plays=1)
    assert "A Midsummer Night" in text[:200]
    assert "**" not in text and "_" not in text


def test_markdown_conversion():
    md = "# Play\n\n## ACT I\n\n_Enter HAMLET_\n\n**HAMLET**  \nTo be \u2014 or not.  \n"
    assert markdown_play_to_text(md) == "Play\n\nACT I\n\nEnter HAMLET\n\nHAMLET:\nTo be -- or not.\n"


def test_batches_are_shifted_windows_and_deterministic(token_ids):
    batches = LMBatches(token_ids, batch_size=4, seq_len=16)
    b1 = batches(torch.Generator().manual_seed(3))
    b2 = batches(torch.Generator().manual_seed(3))
    assert b1["input_ids"].shape == (4, 16)
    assert torch.equal(b1["input_ids"], b2["input_ids"])
    assert torch.equal(b1["input_ids"][:, 1:], b1["targets"][:, :-1])
    with pytest.raises(ValueError, match="too few"):
        LMBatches(token_ids[:10], batch_size=2, seq_len=16)


def test_default_tokenizer_is_the_character_tokenizer_of_the_text(tmp_path, text):
    path = tmp_path / "mine.txt"
    path.write_text(text, encoding="utf-8")
    corpus = load_corpus(path)
    chars = CharTokenizer.from_text(text)
    assert isinstance(corpus.tokenizer, CharTokenizer) and corpus.tokenizer.chars == chars.chars
    ids = torch.tensor(chars.encode(text), dtype=torch.long)
    n_val = int(len(ids) * 0.1)
    assert torch.equal(corpus.train_ids, ids[:-n_val]) and torch.equal(corpus.val_ids, ids[-n_val:])
    assert corpus.text == text and corpus.vocab_size == len(set(text))


def test_corpus_of_bpe_tokens(tmp_path, text):
    path = tmp_path / "mine.txt"
    path.write_text(text, encoding="utf-8")
    bpe = BPETokenizer.train(text, 300, special_tokens=["<|endoftext|>"])
    corpus = load_corpus(path, val_fraction=0.2, tokenizer=bpe)
    assert corpus.tokenizer is bpe and corpus.vocab_size == bpe.vocab_size
    ids = torch.cat([corpus.train_ids, corpus.val_ids])
    assert ids.tolist() == bpe.encode(text) and bpe.decode(ids.tolist()) == text
    assert len(ids) < len(text) / 2  # merges make tokens longer than characters
    assert len(corpus.val_ids) == int(len(ids) * 0.2) and corpus.train_ids.dtype == torch.long
    batch = LMBatches(corpus.train_ids, batch_size=2, seq_len=8)(torch.Generator().manual_seed(0))
    assert int(batch["input_ids"].max()) < corpus.vocab_size


def test_a_prepared_character_tokenizer_is_used_as_given(tmp_path, text):
    path = tmp_path / "mine.txt"
    path.write_text(text, encoding="utf-8")
    tok = CharTokenizer.from_text(text + "XYZ").with_specials(["<pad>"])
    corpus = load_corpus(path, tokenizer=tok)
    assert corpus.tokenizer is tok and corpus.vocab_size == len(set(text + "XYZ")) + 1
    with pytest.raises(TypeError, match="tokenizer must have encode"):
        load_corpus(path, tokenizer="bpe")
    with pytest.raises(ValueError, match="only 1 tokens"):
        short = tmp_path / "short.txt"
        short.write_text("aaaaaaaa", encoding="utf-8")
        load_corpus(short, tokenizer=BPETokenizer.train("aaaaaaaa", 260))


def test_corpus_refuses_devices_and_pipes_instead_of_hanging(tmp_path):
    """Issue 18 item 6: /dev/zero was read until memory ran out, a FIFO blocked forever."""
    import os

    from llmcourse.data import corpus_text

    with pytest.raises(ValueError, match="not a regular file"):
        load_corpus("/dev/zero")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        corpus_text(fifo)


@pytest.mark.parametrize("plays", [0, -1, 1.5, True])
def test_plays_must_be_a_positive_count(plays):
    """Issue 18, the rest of the list: plays=0 returned every play and plays=-1 all but the last."""
    with pytest.raises(ValueError, match=rf"plays={plays!r} must be a positive number of plays"):
        corpus_text("shakespeare", plays=plays)


def test_a_local_file_named_shakespeare_is_not_silently_shadowed(tmp_path, monkeypatch):
    from pathlib import Path

    (tmp_path / "shakespeare").write_text("to be or not to be\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"Path\('shakespeare'\)"):
        corpus_text("shakespeare")
    assert corpus_text(Path("shakespeare")) == "to be or not to be\n"


@pytest.mark.parametrize("batch_size, seq_len", [(0, 8), (4, 0), (-1, 8), (2.5, 8), (True, 8)])
def test_lm_batches_refuse_empty_or_fractional_sizes(batch_size, seq_len):
    with pytest.raises(ValueError, match="positive integer"):
        LMBatches(torch.arange(100), batch_size, seq_len)
