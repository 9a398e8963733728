"""Quality filters: each reason on a text written to fail it, and the short real texts that must pass."""

from __future__ import annotations

import pytest

from langkit.config import ConfigError, FilterConfig, config_from_dict
from langkit.corpus.filters import (
    FILTER_REASONS,
    check_quality,
    letter_ratio,
    repeated_ngram_ratio,
    script_ratio,
)

DEFAULT = FilterConfig()


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Nanga def?", "wol_Latn"),
        ("Mo.", "bci_Latn"),
        ("Akwaba", "bci_Latn"),
        ("Mbote.", "lin_Latn"),
        ("Asante sana.", "swh_Latn"),
        ("Kɛ ɔ ti kpa'n, ɔ kɔ awlo.", "bci_Latn"),
        ("Ng'ombe 3 wanakula nyasi.", "swh_Latn"),
        ("Mɔ̌kɔ́ ezalí malámu.", "lin_Latn"),
        ("Yohane 3:16", "swh_Latn"),
        ("Woo ma ci <PHONE> ngir jàng Wolof.", "wol_Latn"),
        ("Jàmm rekk, jàmm rekk.", "wol_Latn"),  # said twice: no trigram repeats
    ],
)
def test_real_short_texts_are_kept(text: str, language: str) -> None:
    assert check_quality(text, language, DEFAULT) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a", "too_short"),
        ("?", "too_short"),
        ("mbote " * 2001, "too_long"),
        ("x" * 10_001, "too_long"),
        ("12 345 678 90 -- 11 / 12", "mostly_symbols"),
        ("<PHONE>", "mostly_symbols"),  # all that was left of a line after PII scrubbing
        ("* * * = = = ###", "mostly_symbols"),
        ("akwaba akwaba akwaba akwaba akwaba", "repeated_ngrams"),
        ("Dalal ak jàmm, dalal ak jàmm, dalal ak jàmm, dalal ak jàmm", "repeated_ngrams"),
        ("سلام عليكم، نان نگ دف", "wrong_script"),  # Wolof in Arabic script (Ajami)
        ("Привет, как дела?", "wrong_script"),
    ],
)
def test_each_filter_gives_its_reason(text: str, reason: str) -> None:
    assert check_quality(text, "wol_Latn", DEFAULT) == reason
    assert reason in FILTER_REASONS


def test_measures() -> None:
    assert letter_ratio("ab 12") == 0.5
    assert letter_ratio("<EMAIL> ok") == 2 / 3  # the placeholder is one symbol
    assert letter_ratio("   ") == 1.0
    assert repeated_ngram_ratio("a b c a b c a b c".split(), 3) == pytest.approx(4 / 7)
    assert repeated_ngram_ratio("a a a".split(), 3) == 0.0  # fewer than 3 trigrams: no judgement
    assert script_ratio("kɛ ɔ ŋ ñ ë Ɛ") == 1.0  # all Latin (IPA and Latin-1 letters included)
    assert script_ratio("ab αβ") == 0.5


def test_thresholds_come_from_the_config() -> None:
    strict = FilterConfig(min_chars=12, min_words=3)
    assert check_quality("Nanga def?", "wol_Latn", strict) == "too_short"
    assert check_quality("Nanga def?", "wol_Latn", FilterConfig(enabled=False, min_chars=100)) is None
    assert check_quality("ab αβγδ", "wol_Latn", FilterConfig(min_script_ratio=0.0)) is None
    assert check_quality("akwaba " * 5, "bci_Latn", FilterConfig(max_repeated_ngrams=1.0)) is None


def test_filter_config_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"corpus\.filters\.min_letter_ratio"):
        config_from_dict({"corpus": {"filters": {"min_letter_ratio": 2}}})
    with pytest.raises(ConfigError, match=r"corpus\.filters\.max_chars"):
        config_from_dict({"corpus": {"filters": {"max_chars": 1}}})
    with pytest.raises(ConfigError, match="unknown config key 'corpus.filters.min_len'"):
        config_from_dict({"corpus": {"filters": {"min_len": 1}}})


def test_letter_ratio_counts_what_isalpha_counts() -> None:
    # The ASCII fast path (bytes.translate) and the general one agree with str.isalpha on every text.
    import random

    from langkit.corpus.filters import letter_ratio

    rng = random.Random(0)
    alphabet = "abcXYZ019 _-.,;:!?<>#@\t" + "ëñàɛɔŋ²½Ⅻ\u0301"
    for _ in range(2_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        stripped = "".join(text.split())
        expected = sum(map(str.isalpha, text)) / len(stripped) if stripped else 1.0
        if "<" not in text:  # placeholders aside, the plain definition
            assert letter_ratio(text) == expected, text
