"""Request text: validation and splitting into sentences (pure, no torch).

Everything here raises ``InputError``: the model turns it into an in-band error on the request's
stream instead of letting bad input reach ChatTTS.
"""

from __future__ import annotations

import re
import unicodedata

# Sentence ends: Chinese full-width marks end a sentence on their own; ASCII ones only when
# followed by whitespace or the end, so "3.14" and "e.g.x" stay whole.
_SENTENCE_END = re.compile(r"(?<=[。！？；…])|(?<=[.!?;])(?=\s|$)")  # noqa: RUF001 - Chinese punctuation on purpose
# A split on commas keeps over-long sentences within what one ChatTTS call handles well.
_CLAUSE_END = re.compile(r"(?<=[，,、：:])")  # noqa: RUF001 - Chinese punctuation on purpose


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


def split_sentences(text: str, max_sentence_chars: int = 200) -> list[str]:
    """Split at sentence ends (Chinese and English), then at commas when still too long.

    Pieces with nothing speakable (a lone "..." or "—") are merged into the previous piece so
    that no ChatTTS call gets a text without words.
    """
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
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


def _pack_clauses(sentence: str, limit: int) -> list[str]:
    packed: list[str] = []
    current = ""
    for clause in _CLAUSE_END.split(sentence):
        if current and len(current) + len(clause) > limit:
            packed.append(current.strip())
            current = ""
        current += clause
        while len(current) > limit:  # one clause longer than the limit: cut it hard
            packed.append(current[:limit].strip())
            current = current[limit:]
    if current.strip():
        packed.append(current.strip())
    return packed
