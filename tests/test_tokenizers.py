import pytest

from llmcourse.tokenizers import CharTokenizer


def test_round_trip(text):
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size == len(set(text))


def test_vocabulary_is_sorted_and_stable(text):
    assert CharTokenizer.from_text(text).chars == sorted(set(text))


def test_unknown_character_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match="'Z' is not in this tokenizer's vocabulary"):
        tokenizer.encode("Zebra")


def test_specials_follow_characters_and_round_trip_through_json(tmp_path, tokenizer):
    tok = tokenizer.with_specials(["<pad>", "<s0>"])
    assert tok.special_id("<pad>") == len(tokenizer.chars)
    assert tok.decode([tok.special_id("<s0>")]) == "<s0>"
    path = tmp_path / "tok.json"
    tok.save(path)
    again = CharTokenizer.load(path)
    assert again.encode("speak") == tok.encode("speak") and again.specials == tok.specials


def test_bad_ids_and_empty_text():
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")
    with pytest.raises(ValueError, match="outside"):
        CharTokenizer.from_text("ab").decode([5])


# ---------------------------------------------------------------------------
# Byte-level BPE
# ---------------------------------------------------------------------------

import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import regex

from llmcourse.tokenizers import GPT2_SPLIT_PATTERN, BPETokenizer, _safe_chunks, bytes_to_unicode

hf_tokenizers = pytest.importorskip("tokenizers")

TRICKY = [
    "Hello, world! It's the 2nd time we've met; I'd say you'll know I'm here.",
    "  leading spaces, trailing spaces   ",
    "tabs\tand\t\tmore tabs\t\n",
    "newlines\n\n\nthree of them\r\nwindows line\r\n",
    "   \n \n  \t  \n",
    "digits 0123456789 and 3.14159 and 1,000,000",
    "ünïcödé àccents, Straße, Ελληνικά, русский язык",
    "emoji 😀👍🏽 👩‍👩‍👧 flags 🇫🇷🇯🇵",
    "中文文本，日本語のテキスト、한국어 텍스트",
    "CONTRACTIONS: DON'T, I'LL, WE'VE; mixed 'quotes' and ''double''",
    "symbols !@#$%^&*()_+-=[]{}|;:\",.<>/?`~ \\ ",
    "\u00a0non-breaking\u2003em space\u3000ideographic space",
    "",
    " ",
    "a",
]

SMALL = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n"
    "First Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n\n"
    "All:\nWe know't, we know't.\n\nFirst Citizen:\nLet us kill him, and we'll have corn at our own price.\n"
    "Is't a verdict?\n\nAll:\nNo more talking on't; let it be done: away, away!\n\n"
)


@pytest.fixture(scope="module")
def shakespeare_slice() -> str:
    from llmcourse.data import corpus_text

    return corpus_text("shakespeare", plays=1)[:60_000]


@pytest.fixture(scope="module")
def bpe(shakespeare_slice) -> BPETokenizer:
    return BPETokenizer.train(shakespeare_slice, 600, special_tokens=["<|endoftext|>", "<|pad|>"])


def hf_from_files(directory: Path, specials=()):
    """Hugging Face's byte-level BPE built from the vocab.json/merges.txt in ``directory``."""
    tok = hf_tokenizers.ByteLevelBPETokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    if specials:
        tok.add_special_tokens(list(specials))
    return tok


def naive_merges(text: str, n_merges: int, tie_break: str = "greater") -> list[tuple[bytes, bytes]]:
    """Reference BPE: recount every pair of the whole corpus before each merge (slow, obviously right).

    ``tie_break="greater"`` is the course's rule; ``"hf"`` is Hugging Face's BpeTrainer's: the pair of
    smaller ids, where its ids are the byte alphabet sorted by GPT-2 character, then the merges in order.
    """
    words = Counter(regex.findall(GPT2_SPLIT_PATTERN, text))
    seqs = {w: [bytes([b]) for b in w.encode("utf-8")] for w in words}
    alphabet = bytes_to_unicode()
    hf_id = {bytes([b]): k for k, b in enumerate(sorted(range(256), key=lambda b: alphabet[b]))}
    merges = []
    for _ in range(n_merges):
        counts = Counter()
        for w, seq in seqs.items():
            for pair in zip(seq, seq[1:]):
                counts[pair] += words[w]
        if not counts:
            break
        if tie_break == "greater":
            best = max(counts, key=lambda p: (counts[p], p))
        else:
            best = max(counts, key=lambda p: (counts[p], -hf_id[p[0]], -hf_id[p[1]]))
        merges.append(best)
        hf_id[best[0] + best[1]] = len(hf_id)
        for w, seq in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i < len(seq) - 1 and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[w] = out
    return merges


def pair_counts_after(text: str, merges) -> Counter:
    """Pair counts of ``text`` after applying ``merges`` (by re-encoding every word with them)."""
    tok = BPETokenizer({i: bytes([i]) for i in range(256)} | {256 + k: a + b for k, (a, b) in enumerate(merges)}, merges)
    counts = Counter()
    for w, f in Counter(regex.findall(GPT2_SPLIT_PATTERN, text)).items():
        toks = [tok.token_bytes(i) for i in tok.encode(w)]
        for pair in zip(toks, toks[1:]):
            counts[pair] += f
    return counts


def test_byte_alphabet_is_gpt2s():
    alphabet = bytes_to_unicode()
    assert len(set(alphabet.values())) == 256
    assert alphabet[ord(" ")] == "Ġ" and alphabet[ord("\n")] == "Ċ" and alphabet[ord("A")] == "A"
    assert all(not c.isspace() for c in alphabet.values())


def test_ids_are_bytes_then_merges_then_specials(bpe):
    assert [bpe.vocab[i] for i in range(256)] == [bytes([i]) for i in range(256)]
    assert [bpe.vocab[256 + k] for k in range(len(bpe.merges))] == [a + b for a, b in bpe.merges]
    assert len(bpe.merges) == 600 - 256 - 2
    assert bpe.special_tokens == {"<|endoftext|>": 598, "<|pad|>": 599} and bpe.vocab_size == 600


def test_incremental_counts_equal_a_full_recount_per_merge(shakespeare_slice):
    text = shakespeare_slice[:8_000] + "aaaa aaa aaaaa abababab"  # overlapping pairs
    fast = BPETokenizer.train(text, 256 + 150).merges
    assert fast == naive_merges(text, 150)


def test_ties_go_to_the_lexicographically_greater_pair():
    # every pair of "abcd" occurs once: (c, d) > (b, c) > (a, b)
    assert BPETokenizer.train("abcd", 259).merges == [(b"c", b"d"), (b"b", b"cd"), (b"a", b"bcd")]
    # after (a, b), the pairs (ab, c) and (a, c) both occur twice; b"ab" > b"a" decides (HF, by smaller ids, takes (a, c))
    merges = BPETokenizer.train("abc\nabc\nac\nac\nab\nab\n", 256 + 3).merges
    assert merges == [(b"a", b"b"), (b"ab", b"c"), (b"a", b"c")]


def test_merges_equal_hugging_face_bpe_trainer_until_the_first_tie(tmp_path, shakespeare_slice):
    """HF breaks ties by its smaller token ids, the course by the greater bytes; the merges agree until a tie."""
    text = shakespeare_slice[:30_000]
    ours = BPETokenizer.train(text, 600).merges
    hf = hf_tokenizers.ByteLevelBPETokenizer()
    hf.train_from_iterator([text], vocab_size=600, min_frequency=0, show_progress=False)
    hf.save_model(str(tmp_path))
    b2u = {c: b for b, c in bytes_to_unicode().items()}
    lines = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    theirs = [tuple(bytes(b2u[c] for c in t) for t in line.split(" ")) for line in lines]
    assert len(theirs) == len(ours)
    first = next((k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b), len(ours))
    assert first >= 10, f"only {first} merges agree"
    if first < len(ours):
        counts = pair_counts_after(text, ours[:first])
        assert counts[ours[first]] == counts[theirs[first]] == max(counts.values())
        assert ours[first] > theirs[first]


def test_hugging_face_trainer_is_the_same_algorithm_with_its_own_tie_break(tmp_path, shakespeare_slice):
    """With HF's tie rule put into the reference, every one of HF's merges is reproduced."""
    text = shakespeare_slice[:6_000]
    hf = hf_tokenizers.ByteLevelBPETokenizer()
    hf.train_from_iterator([text], vocab_size=256 + 120, min_frequency=0, show_progress=False)
    hf.save_model(str(tmp_path))
    b2u = {c: b for b, c in bytes_to_unicode().items()}
    lines = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    theirs = [tuple(bytes(b2u[c] for c in t) for t in line.split(" ")) for line in lines]
    assert theirs == naive_merges(text, 120, tie_break="hf")
    assert naive_merges(text, 120) == BPETokenizer.train(text, 256 + 120).merges != theirs


@pytest.mark.parametrize("text", TRICKY)
def test_encodings_equal_hugging_face_through_saved_files(tmp_path, bpe, text):
    bpe.save(tmp_path)
    hf = hf_from_files(tmp_path, bpe.specials)
    assert bpe.encode(text) == hf.encode(text).ids
    assert bpe.decode(bpe.encode(text)) == text == hf.decode(bpe.encode(text))


def test_runs_of_one_symbol_merge_left_to_right_like_hugging_face(tmp_path):
    """Overlapping pairs ("aaa" holds (a, a) twice) are the case where merge order matters."""
    tok = BPETokenizer.train("aaaa aaaaa aaa zzzzzzz !!!! 1111111      x\n\n\n\n" * 3, 290)
    assert (b"a", b"a") in tok.merges and (b"aa", b"aa") in tok.merges
    tok.save(tmp_path)
    hf = hf_from_files(tmp_path)
    for n in range(1, 12):
        for ch in "az!1 \n":
            text = ch * n + " " + ch * (n + 1) + "x" + ch * n
            assert tok.encode(text) == hf.encode(text).ids, repr(text)
            assert tok.decode(tok.encode(text)) == text


def test_transformers_gpt2_tokenizer_loads_the_files(tmp_path, bpe):
    transformers = pytest.importorskip("transformers")
    bpe.save(tmp_path)
    text = "".join(TRICKY) + "<|endoftext|>the end"
    # GPT-2's tokenizer class registers "<|endoftext|>" (its unk/bos/eos) as special and finds its id in vocab.json
    hf = transformers.GPT2TokenizerFast(vocab=str(tmp_path / "vocab.json"), merges=str(tmp_path / "merges.txt"))
    assert hf(text, add_special_tokens=False)["input_ids"] == bpe.encode(text)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))  # reads tokenizer_config.json: both specials
    assert isinstance(hf, transformers.GPT2TokenizerFast) and len(hf) == bpe.vocab_size
    text += "<|pad|><|pad|>x"
    assert hf(text, add_special_tokens=False)["input_ids"] == bpe.encode(text)
    assert hf.decode(bpe.encode(text)) == text
    assert hf.pad_token is None and hf.eos_token == "<|endoftext|>"
    # without "<|endoftext|>", transformers must not invent it (its GPT-2 default)
    pad_only = BPETokenizer(bpe.vocab, bpe.merges, ["<|pad|>"])
    pad_only.save(tmp_path / "pad_only")
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "pad_only"))
    assert len(hf) == pad_only.vocab_size and hf(text, add_special_tokens=False)["input_ids"] == pad_only.encode(text)


def test_specials_are_read_from_a_transformers_config_when_special_tokens_json_is_absent(tmp_path, bpe):
    bpe.save(tmp_path)
    (tmp_path / "special_tokens.json").unlink()
    assert BPETokenizer.load(tmp_path).special_tokens == bpe.special_tokens
    (tmp_path / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="tokenizer_config.json .* is not a valid transformers config"):
        BPETokenizer.load(tmp_path)


def test_course_loads_files_written_by_hugging_face(tmp_path, shakespeare_slice):
    hf = hf_tokenizers.ByteLevelBPETokenizer()
    hf.train_from_iterator([shakespeare_slice], vocab_size=500, special_tokens=["<|endoftext|>"], show_progress=False)
    hf.save_model(str(tmp_path))
    assert not (tmp_path / "special_tokens.json").exists()
    ours = BPETokenizer.load(tmp_path, special_tokens=["<|endoftext|>"])
    assert ours.special_id("<|endoftext|>") == hf.token_to_id("<|endoftext|>") == 0  # HF puts specials first
    assert ours.vocab[ours._byte_ids[ord("!")]] == b"!"  # ids are the file's, not the byte values
    for text in TRICKY + ["one<|endoftext|>two<|endoftext|><|endoftext|>"]:
        assert ours.encode(text) == hf.encode(text).ids
        assert ours.decode(ours.encode(text)) == text


def test_random_strings_round_trip_and_equal_hugging_face(tmp_path, bpe):
    bpe.save(tmp_path)
    hf = hf_from_files(tmp_path, bpe.specials)
    rng = random.Random(0)
    pool = list("abcxyz ABC'\t\n\r  0123.,!?") + ["'s", "'ll", " the", "<|endoftext|>", "<|pad|>", "<|endo"]
    for _ in range(300):
        parts = []
        for _ in range(rng.randrange(0, 30)):
            r = rng.random()
            if r < 0.5:
                parts.append(rng.choice(pool))
            elif r < 0.8:
                parts.append(chr(rng.randrange(0x80, 0x3000)))
            else:
                cp = rng.randrange(0x3000, 0x110000)
                parts.append(chr(cp if not 0xD800 <= cp < 0xE000 else cp - 0x1000))  # no lone surrogates
        s = "".join(parts)
        ids = bpe.encode(s)
        assert bpe.decode(ids) == s
        assert ids == hf.encode(s).ids, repr(s)


def test_special_tokens_are_never_split_or_merged(bpe):
    text = "a<|endoftext|>b <|pad|><|endoftext|>\n<|endoftext|>"
    ids = bpe.encode(text)
    assert ids.count(bpe.special_id("<|endoftext|>")) == 3 and ids.count(bpe.special_id("<|pad|>")) == 1
    assert bpe.decode(ids) == text
    trained = BPETokenizer.train("x<|s|>x<|s|>x<|s|>x<|s|>" * 50, 270, special_tokens=["<|s|>"])
    assert all(b"|" not in a + b or b"<|s" not in a + b for a, b in trained.merges)
    assert not any(b"x<" in a + b or b">x" in a + b for a, b in trained.merges)


def test_longest_special_token_wins():
    tok = BPETokenizer.train("hello there", 300, special_tokens=["<|a|>", "<|a|><|b|>"])
    assert tok.encode("<|a|><|b|><|a|>") == [tok.special_id("<|a|><|b|>"), tok.special_id("<|a|>")]


def test_unknown_special_and_bad_vocab_sizes_are_clear_errors(bpe):
    with pytest.raises(ValueError, match=r"'<mask>' is not a special token.*with_specials"):
        bpe.special_id("<mask>")
    with pytest.raises(ValueError, match=r"vocab_size=257 is too small.*256 byte tokens \+ 2 special"):
        BPETokenizer.train("hello", 257, special_tokens=["<a>", "<b>"])
    with pytest.raises(ValueError, match="distinct"):
        BPETokenizer.train("hello", 300, special_tokens=["<a>", "<a>"])
    with pytest.raises(ValueError, match="vocab_size must be an integer"):
        BPETokenizer.train("hello", 300.0)
    with pytest.raises(ValueError, match="spelled like a regular token"):
        BPETokenizer.train("hello", 300, special_tokens=["!"])
    with pytest.raises(ValueError, match="token id 10000 is not in this tokenizer's vocabulary"):
        bpe.decode([10000])
    with_mask = bpe.with_specials(["<mask>"])
    assert with_mask.special_id("<mask>") == 600 and with_mask.encode("a<mask>") == [97, 600]


def test_training_stops_when_pairs_run_out():
    tok = BPETokenizer.train("ab ab", 1000)
    assert tok.merges == [(b"a", b"b"), (b" ", b"ab")] and tok.vocab_size == 258


def test_training_from_files_equals_training_from_text(tmp_path, shakespeare_slice):
    text = shakespeare_slice[:20_000]
    (tmp_path / "a.txt").write_text(text[:10_000], encoding="utf-8")
    (tmp_path / "b.txt").write_text(text[10_000:], encoding="utf-8")
    from_files = BPETokenizer.train([tmp_path / "a.txt", tmp_path / "b.txt"], 400)
    # a file boundary is a hard boundary, like encoding each file on its own
    words = Counter(regex.findall(GPT2_SPLIT_PATTERN, text[:10_000])) + Counter(regex.findall(GPT2_SPLIT_PATTERN, text[10_000:]))
    assert from_files.merges == naive_merges_from_words(words, 144)
    with pytest.raises(ValueError, match="does not exist"):
        BPETokenizer.train([tmp_path / "missing.txt"], 300)


def naive_merges_from_words(words: Counter, n: int):
    text_like = "".join(w * f for w, f in words.items())  # not used for pre-tokenizing: words are given
    del text_like
    seqs = {w: [bytes([b]) for b in w.encode()] for w in words}
    merges = []
    for _ in range(n):
        counts = Counter()
        for w, seq in seqs.items():
            for pair in zip(seq, seq[1:]):
                counts[pair] += words[w]
        best = max(counts, key=lambda p: (counts[p], p))
        merges.append(best)
        for w, seq in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i < len(seq) - 1 and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1]); i += 2
                else:
                    out.append(seq[i]); i += 1
            seqs[w] = out
    return merges


def test_encode_iterable_equals_encode_of_the_whole_text(bpe):
    rng = random.Random(1)
    texts = TRICKY + [SMALL, "a \n\n  b<|endoftext|>  \n\t c<|pad|>d <|endo", "x" * 50 + "   " * 20 + "\n" * 5]
    for text in texts:
        whole = bpe.encode(text)
        assert list(bpe.encode_iterable(text.splitlines(keepends=True))) == whole
        for _ in range(20):  # arbitrary cuts, inside words, whitespace runs and special tokens
            cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randrange(1, 8))))
            chunks = [text[i:j] for i, j in zip([0] + cuts, cuts + [len(text)])]
            assert list(bpe.encode_iterable(chunks)) == whole, (text, chunks)


def test_encode_iterable_holds_back_little(bpe, tmp_path):
    lines = [f"line {k}: some words, and more words.\n" for k in range(2000)]
    pieces = list(_safe_chunks(iter(lines), bpe.special_tokens))
    assert "".join(pieces) == "".join(lines)
    assert max(len(p) for p in pieces) <= 2 * max(len(line) for line in lines)  # never the whole stream
    path = tmp_path / "big.txt"
    path.write_text("".join(lines), encoding="utf-8")
    with path.open(encoding="utf-8") as f:
        assert list(bpe.encode_iterable(f)) == bpe.encode("".join(lines))


def test_save_load_round_trip(tmp_path, bpe):
    bpe.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merges.txt", "special_tokens.json", "tokenizer_config.json", "vocab.json"]
    assert (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()[0] == "#version: 0.2"
    again = BPETokenizer.load(tmp_path)
    assert again.vocab == bpe.vocab and again.merges == bpe.merges and again.special_tokens == bpe.special_tokens
    text = "".join(TRICKY)
    assert again.encode(text) == bpe.encode(text)


def test_corrupt_or_missing_files_are_clear_errors(tmp_path, bpe):
    with pytest.raises(ValueError, match="does not exist"):
        BPETokenizer.load(tmp_path / "nowhere")
    bpe.save(tmp_path)
    merges = (tmp_path / "merges.txt").read_text(encoding="utf-8")
    vocab = (tmp_path / "vocab.json").read_text(encoding="utf-8")

    (tmp_path / "vocab.json").write_text(vocab[:-20], encoding="utf-8")
    with pytest.raises(ValueError, match="vocab.json .* is not valid JSON"):
        BPETokenizer.load(tmp_path)
    (tmp_path / "vocab.json").write_text(vocab, encoding="utf-8")

    (tmp_path / "merges.txt").write_text(merges + "a b c\n", encoding="utf-8")
    with pytest.raises(ValueError, match="two tokens separated by one space"):
        BPETokenizer.load(tmp_path)
    (tmp_path / "merges.txt").write_text(merges + "Ġzzz q\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not in the vocabulary; merges.txt and vocab.json do not belong together"):
        BPETokenizer.load(tmp_path)
    (tmp_path / "merges.txt").write_text(merges, encoding="utf-8")

    with pytest.raises(ValueError, match="'<mask>' is not in vocab.json"):
        BPETokenizer.load(tmp_path, special_tokens=["<mask>"])
    (tmp_path / "special_tokens.json").unlink()  # then "<|pad|>" in vocab.json reads as the bytes b"<|pad|>"
    (tmp_path / "tokenizer_config.json").unlink()
    assert BPETokenizer.load(tmp_path).encode("<|pad|>") != [bpe.special_id("<|pad|>")]
    (tmp_path / "vocab.json").write_text(vocab.replace('"<|pad|>"', '"<pad> token"'), encoding="utf-8")
    with pytest.raises(ValueError, match="' ', which is not in GPT-2's byte-level alphabet.*special_tokens"):
        BPETokenizer.load(tmp_path)
    (tmp_path / "merges.txt").unlink()
    with pytest.raises(ValueError, match="merges.txt is missing"):
        BPETokenizer.load(tmp_path)


def test_command_line_trains_and_encodes(tmp_path, capsys, shakespeare_slice):
    from llmcourse.tokenizers import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare_slice[:20_000], encoding="utf-8")
    assert main(["train", "--vocab-size", "400", "--special-tokens", "<|endoftext|>", "--out", str(tmp_path / "tok"), str(corpus)]) == 0
    tok = BPETokenizer.load(tmp_path / "tok")
    assert tok.vocab_size == 400 and tok.specials == ["<|endoftext|>"]
    assert tok.merges == BPETokenizer.train(shakespeare_slice[:20_000], 400, special_tokens=["<|endoftext|>"]).merges
    capsys.readouterr()
    sample = tmp_path / "sample.txt"
    sample.write_text("To be, or not to be<|endoftext|>\n\nthat is the question:\n", encoding="utf-8")
    assert main(["encode", "--tokenizer", str(tmp_path / "tok"), str(sample)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    ids = [[int(i) for i in line.split()] for line in lines]
    assert ids[0] == tok.encode("To be, or not to be<|endoftext|>\n")
    assert tok.decode(sum(ids, [])) == sample.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--vocab-size", "300", "--out", "OUT", "missing.txt"], "training file 'missing.txt' does not exist"),
        (["train", "--vocab-size", "10", "--out", "OUT", "CORPUS"], "vocab_size=10 is too small"),
        (["train", "--vocab-size", "300", "--colour", "--out", "OUT", "CORPUS"], "unrecognized arguments: --colour"),
        (["encode", "--tokenizer", "OUT", "missing.txt"], "input file 'missing.txt' does not exist"),
        (["encode", "--tokenizer", "nowhere", "CORPUS"], "tokenizer folder 'nowhere' does not exist"),
    ],
)
def test_command_line_errors_exit_2_with_a_message(tmp_path, capsys, monkeypatch, argv, message):
    from llmcourse.tokenizers import main

    monkeypatch.chdir(tmp_path)
    Path("CORPUS").write_text("some text to learn from\n", encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_module_runs_as_a_command(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(SMALL, encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "llmcourse.tokenizers", "train", "--vocab-size", "280", "--out", str(tmp_path / "t"), str(corpus)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # no runpy warning about the module being imported by the package first
    assert (tmp_path / "t" / "merges.txt").read_text(encoding="utf-8").count("\n") == 1 + 24
