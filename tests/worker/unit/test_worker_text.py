from __future__ import annotations

import pytest

from ttsfleet.worker.text import InputError, decode_text, split_sentences, validate_text

pytestmark = pytest.mark.unit


def test_splits_english_and_chinese_sentences_in_order() -> None:
    text = "Hello there. How are you? 我很好。你呢？Fine!"  # noqa: RUF001 - Chinese punctuation on purpose
    assert split_sentences(text) == ["Hello there.", "How are you?", "我很好。", "你呢？", "Fine!"]  # noqa: RUF001 - Chinese punctuation on purpose


def test_decimal_points_and_abbreviation_dots_do_not_split() -> None:
    assert split_sentences("Pi is 3.14 today. Done.") == ["Pi is 3.14 today.", "Done."]


def test_long_sentence_is_cut_at_commas_within_limit() -> None:
    text = ", ".join(["part number one"] * 20) + "."
    pieces = split_sentences(text, max_sentence_chars=60)
    assert len(pieces) > 1 and all(len(piece) <= 60 for piece in pieces)
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")


def test_comma_free_run_longer_than_limit_is_cut_hard() -> None:
    pieces = split_sentences("a" * 250, max_sentence_chars=100)
    assert [len(piece) for piece in pieces] == [100, 100, 50]


def test_punctuation_only_pieces_join_their_neighbour() -> None:
    assert split_sentences("Wait... ... Go.") == ["Wait... ...", "Go."]


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty"), (" \n\t", "empty"), ("?!。，…", "nothing to speak"), ("x" * 11, "at most 10")],  # noqa: RUF001 - Chinese punctuation on purpose
)
def test_validation_errors_are_clear(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        validate_text(text, max_chars=10)


def test_validation_strips_and_accepts_digits_and_cjk() -> None:
    assert validate_text("  42 ", 10) == "42"
    assert validate_text("你好", 10) == "你好"


def test_invalid_utf8_names_the_byte() -> None:
    with pytest.raises(InputError, match="byte 3"):
        decode_text(b"caf\xc3(")
    assert decode_text("é".encode()) == "é"
