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


def test_run_without_any_word_boundary_is_cut_hard() -> None:
    pieces = split_sentences("a" * 250, max_sentence_chars=100)
    assert [len(piece) for piece in pieces] == [100, 100, 50]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. Smith arrived. He sat down.", ["Dr. Smith arrived.", "He sat down."]),
        ("Mr. and Mrs. Jones vs. Prof. Lee.", ["Mr. and Mrs. Jones vs. Prof. Lee."]),
        ("The U.S. Army came. Then it left.", ["The U.S. Army came.", "Then it left."]),
        ("She lives in the U.K. and works here.", ["She lives in the U.K. and works here."]),
        ("J. R. R. Tolkien wrote it. Fine.", ["J. R. R. Tolkien wrote it.", "Fine."]),
        ("Use tools, e.g. hammers. Or not.", ["Use tools, e.g. hammers.", "Or not."]),
        ("It costs 3.50 dollars. Cheap.", ["It costs 3.50 dollars.", "Cheap."]),
        ("Version 2.0.1 is out. Get it.", ["Version 2.0.1 is out.", "Get it."]),
        ("Apples, pears etc. and more. Done.", ["Apples, pears etc. and more.", "Done."]),
        ("See No. 5 here. No. It is not.", ["See No. 5 here.", "No.", "It is not."]),
        ("At 5 p.m. we met. Then I left.", ["At 5 p.m. we met.", "Then I left."]),
        ('He said "Go." Then he went.', ['He said "Go."', "Then he went."]),
        ("So did I. Then we left.", ["So did I.", "Then we left."]),
    ],
)
def test_abbreviations_initials_and_decimals_are_not_sentence_ends(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_mixed_chinese_and_english_keep_splitting() -> None:
    text = "Dr. Wang说：你好。We met in the U.S. last year！然后呢？OK."  # noqa: RUF001 - Chinese punctuation on purpose
    assert split_sentences(text) == [
        "Dr. Wang说：你好。",  # noqa: RUF001 - Chinese punctuation on purpose
        "We met in the U.S. last year！",  # noqa: RUF001 - Chinese punctuation on purpose
        "然后呢？",  # noqa: RUF001 - Chinese punctuation on purpose
        "OK.",
    ]


def test_length_limit_never_cuts_inside_a_word() -> None:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett"]
    text = " ".join(words[i % len(words)] for i in range(80)) + "."
    pieces = split_sentences(text, max_sentence_chars=50)
    assert len(pieces) > 1 and all(len(piece) <= 50 for piece in pieces)
    assert " ".join(pieces).split() == text.split()  # every word whole, in order


def test_long_chinese_sentence_is_cut_between_characters_within_limit() -> None:
    text = "我们今天去公园散步然后回家吃饭" * 10 + "。"
    pieces = split_sentences(text, max_sentence_chars=40)
    assert all(len(piece) <= 40 for piece in pieces) and "".join(pieces) == text


def test_mixed_long_sentence_cuts_at_a_boundary_not_inside_english_words() -> None:
    text = ("天气很好 wonderful weather 我们出发 " * 8).strip() + "。"
    pieces = split_sentences(text, max_sentence_chars=30)
    assert all(len(piece) <= 30 for piece in pieces)
    for piece in pieces:
        for word in ("wonderful", "weather"):
            fragments = [token for token in piece.split() if token and token in word and token != word]
            assert not fragments, f"{word!r} was cut: {piece!r}"


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
