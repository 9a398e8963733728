"""Quality filters: each looks at one normalized text and returns why it should be dropped, or None.

The reasons (stable, they are the keys of the drop counts in ``stats.json``):

``too_short``
    fewer than ``min_chars`` characters or ``min_words`` words. The defaults (2 characters, 1 word)
    only catch stray letters and punctuation: a greeting such as "Mo." or "Nanga def?" is real text.
``too_long``
    more than ``max_chars`` characters or ``max_words`` words: concatenated pages and dumps.
``mostly_symbols``
    letters make up less than ``min_letter_ratio`` of the non-space characters: page numbers, tables
    of figures, lines of punctuation or markup. Placeholders written by PII scrubbing (``<PHONE>``)
    count as symbols, so a line that was only a phone number goes too.
``repeated_ngrams``
    more than ``max_repeated_ngrams`` of the word n-grams (``ngram_size`` words) repeat an earlier
    n-gram of the same text: "akwaba akwaba akwaba akwaba", scraped menus, boilerplate loops. (The
    Gopher quality rules of Rae et al. 2021 measure the same thing on characters of repeated n-grams.)
    A text needs at least three n-grams for the share to mean something.
``wrong_script``
    less than ``min_script_ratio`` of the letters are Latin (the script of all six languages; ɛ ɔ ŋ
    and the IPA block count as Latin): Arabic-script (Ajami) Wolof, Greek or Cyrillic text.

:func:`check_quality` runs them in that order and returns the first reason.
"""

from __future__ import annotations

import re
import string

from langkit.config import FilterConfig
from langkit.languages import get_language

__all__ = ["FILTER_REASONS", "check_quality", "letter_ratio", "repeated_ngram_ratio", "script_ratio"]

FILTER_REASONS = ("too_short", "too_long", "mostly_symbols", "repeated_ngrams", "wrong_script")
"""Every reason a quality filter can give, in the order the filters run."""

_PLACEHOLDER_RE = re.compile(r"<(?:EMAIL|PHONE|URL|ID)>")
_ASCII_LETTERS = string.ascii_letters.encode("ascii")
# Latin letters: Basic Latin, Latin-1 letters, Latin Extended-A/B, IPA (ɛ ɔ), Latin Extended
# Additional, Extended-C/D/E, the ligatures ﬀ-ﬆ and fullwidth Latin.
_LATIN = (
    "A-Za-z\u00aa\u00ba\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u02af\u1d00-\u1dbf\u1e00-\u1eff"
    "\u2c60-\u2c7f\ua720-\ua7ff\uab30-\uab6f\ufb00-\ufb06\uff21-\uff3a\uff41-\uff5a"
)
_NON_LATIN_LETTER_RE = re.compile(f"[^\\W\\d_{_LATIN}]")


def letter_ratio(text: str) -> float:
    """Letters / non-space characters (1.0 for a text of spaces only); placeholders count as symbols."""
    if "<" in text:
        text = _PLACEHOLDER_RE.sub("#", text)
    chars = len("".join(text.split()))
    if not chars:
        return 1.0
    if text.isascii():  # ASCII letters are A-Z and a-z: deleted in one C call
        raw = text.encode("ascii")
        return (len(raw) - len(raw.translate(None, _ASCII_LETTERS))) / chars
    # str.isalpha is true for exactly the letter categories (L*): the same letters as [^\W\d_].
    return sum(map(str.isalpha, text)) / chars


def repeated_ngram_ratio(words: list[str], n: int) -> float:
    """Share of the word n-grams that repeat an earlier one (0.0 with fewer than 3 n-grams)."""
    total = len(words) - n + 1
    if total < 3:
        return 0.0
    unique = len(set(zip(*[words[i:] for i in range(n)], strict=False)))  # the n-grams as tuples
    return (total - unique) / total


def script_ratio(text: str) -> float:
    """Share of the letters that are Latin (1.0 for a text without letters)."""
    if text.isascii() or not _NON_LATIN_LETTER_RE.search(text):
        return 1.0
    letters = sum(map(str.isalpha, text))
    return 1.0 - len(_NON_LATIN_LETTER_RE.findall(text)) / letters if letters else 1.0


def check_quality(text: str, language: str, cfg: FilterConfig) -> str | None:
    """The first quality filter ``text`` fails (one of :data:`FILTER_REASONS`), or None to keep it."""
    if not cfg.enabled:
        return None
    words = text.lower().split()
    if len(text) < cfg.min_chars or len(words) < cfg.min_words:
        return "too_short"
    if len(text) > cfg.max_chars or len(words) > cfg.max_words:
        return "too_long"
    if letter_ratio(text) < cfg.min_letter_ratio:
        return "mostly_symbols"
    if repeated_ngram_ratio(words, cfg.ngram_size) > cfg.max_repeated_ngrams:
        return "repeated_ngrams"
    if get_language(language).code.endswith("_Latn") and script_ratio(text) < cfg.min_script_ratio:
        return "wrong_script"
    return None
