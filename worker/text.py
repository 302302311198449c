"""Request text: validation and splitting into sentences (pure, no torch).

Everything here raises ``InputError``: the model turns it into an in-band error on the request's
stream instead of letting bad input reach ChatTTS.
"""

from __future__ import annotations

import re
import unicodedata

# Candidate sentence ends: Chinese full-width marks end a sentence on their own; ASCII ones only
# when followed by whitespace or the end (closing quotes and brackets may come between), so
# "3.14" and "e.g.x" stay whole. A lone "." is then checked against abbreviations (``_ends_sentence``).
_SENTENCE_END = re.compile(r"[。！？；…]+[”’」』）)]*|[.!?;]+[\"'”’)\]]*(?=\s|$)")  # noqa: RUF001 - Chinese punctuation on purpose
# A split on commas keeps over-long sentences within what one ChatTTS call handles well.
_CLAUSE_END = re.compile(r"(?<=[，,、：:])")  # noqa: RUF001 - Chinese punctuation on purpose
# "J." "U.S." "e.g." "a.m.": single letters with dots are initials and dotted abbreviations.
_INITIALS = re.compile(r"(?:[A-Za-z]\.)*[A-Za-z]")
# Words that take a period and are followed by more of the same sentence (titles, Latin, units).
_ABBREVIATIONS = frozenset(
    {
        *("mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "fr", "rev", "hon"),
        *("gen", "col", "capt", "lt", "sgt", "gov", "sen", "rep", "pres"),
        *("vs", "cf", "approx", "fig", "figs", "dept", "est", "ca", "vol", "ed", "eds", "al"),
        *("inc", "ltd", "co", "corp", "bros"),
    }
)
# ... and those that do so only before a number ("No. 5", "p. 12").
_BEFORE_NUMBER = frozenset(["no", "nos", "p", "pp", "art", "sec", "ch", "para"])
_OPENERS = "\"'“‘([「『（"  # noqa: RUF001 - Chinese punctuation on purpose


class InputError(ValueError):
    """The request is unusable as sent; the message is shown to the caller as is."""


def decode_text(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"text is not valid UTF-8 (byte {error.start}: {error.reason})") from None


def has_speakable(text: str) -> bool:
    """True when some character is a letter or a digit (in any script)."""
    return any(unicodedata.category(char)[0] in "LN" for char in text)


def validate_text(text: str, max_chars: int) -> str:
    stripped = text.strip()
    if not stripped:
        raise InputError("text is empty")
    if len(stripped) > max_chars:
        raise InputError(f"text has {len(stripped)} characters; this fleet accepts at most {max_chars}")
    if not has_speakable(stripped):
        raise InputError("text has nothing to speak: it holds only punctuation or symbols")
    return stripped


def _ends_sentence(text: str, dot: int, after: int) -> bool:
    """Whether the lone "." at ``text[dot]`` ends a sentence (``after``: just past its mark)."""
    rest = text[after:].lstrip()
    if not rest:
        return True
    before = text[:dot].split()
    word = before[-1].lstrip(_OPENERS) if before else ""
    if word != "I" and _INITIALS.fullmatch(word):
        return False  # "J. Smith", "the U.S. government", "e.g. this"
    if word.lower() in _ABBREVIATIONS:
        return False  # "Dr. Smith", "vs. them"
    if word.lower() in _BEFORE_NUMBER and rest[0].isdigit():
        return False  # "No. 5"
    # A sentence does not start in lower case: "etc. and more" goes on.
    return not rest[0].islower()


def _sentences(text: str) -> list[str]:
    pieces = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        mark = match.group().rstrip("\"'”’)]")  # noqa: RUF001 - Chinese punctuation on purpose
        if mark == "." and not _ends_sentence(text, match.start(), match.end()):
            continue
        pieces.append(text[start : match.end()])
        start = match.end()
    pieces.append(text[start:])
    return pieces


def split_sentences(text: str, max_sentence_chars: int = 200) -> list[str]:
    """Split at sentence ends (Chinese and English), then at commas when still too long, then at
    the last space (or between CJK characters) within the limit, so no word is cut.

    Pieces with nothing speakable (a lone "..." or "—") are merged into the previous piece so
    that no ChatTTS call gets a text without words.
    """
    pieces: list[str] = []
    for sentence in _sentences(text):
        sentence = sentence.strip()
        if not sentence:
            continue
        if len(sentence) <= max_sentence_chars:
            pieces.append(sentence)
            continue
        pieces.extend(_pack_clauses(sentence, max_sentence_chars))
    merged: list[str] = []
    for piece in pieces:
        if merged and not has_speakable(piece):
            merged[-1] = f"{merged[-1]} {piece}"
        elif not merged or has_speakable(merged[-1]):
            merged.append(piece)
        else:
            merged[-1] = f"{merged[-1]} {piece}"
    return merged


def _is_cjk(char: str) -> bool:
    """Scripts written without spaces between words: a cut between two of these cuts no word."""
    code = ord(char)
    return (
        0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x4DBF  # CJK extension A
        or 0x4E00 <= code <= 0x9FFF  # CJK unified ideographs
        or 0xF900 <= code <= 0xFAFF  # compatibility ideographs
        or 0xAC00 <= code <= 0xD7AF  # hangul syllables
        or 0x3000 <= code <= 0x303F  # CJK punctuation
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
    )


def _cut_point(text: str, limit: int) -> int:
    """Where to cut ``text`` (longer than ``limit``): the last word boundary within the limit; a
    hard cut only for a run with no boundary at all (no spaces, no CJK), which is no word."""
    for index in range(limit, 0, -1):
        left, right = text[index - 1], text[index]
        if left.isspace() or right.isspace() or _is_cjk(left) or _is_cjk(right):
            return index
    return limit


def _pack_clauses(sentence: str, limit: int) -> list[str]:
    packed: list[str] = []
    current = ""
    for clause in _CLAUSE_END.split(sentence):
        if current.strip() and len(current) + len(clause) > limit:
            packed.append(current.strip())
            current = ""
        current += clause
        while len(current.strip()) > limit:  # one clause longer than the limit: cut at a word boundary
            current = current.strip()
            cut = _cut_point(current, limit)
            packed.append(current[:cut].strip())
            current = current[cut:]
    if current.strip():
        packed.append(current.strip())
    return packed
