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
