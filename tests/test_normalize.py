"""The shared normalizer: every rule, its switch, its languages, and the counts and samples it reports."""

from __future__ import annotations

import unicodedata

import pytest

from langkit.config import ConfigError, NormalizeConfig, config_from_dict
from langkit.corpus.normalize import FLAGS, LOOKALIKES, RULES, Normalizer, normalize_text

NBSP, NNBSP, THIN, ZWSP, BOM, SHY = "\u00a0", "\u202f", "\u2009", "\u200b", "\ufeff", "\u00ad"


# --------------------------------------------------------------------------------------------------
# Look-alikes
# --------------------------------------------------------------------------------------------------

OPEN_E_O_CASES = [
    ("\u03b5", "ɛ"),  # Greek small epsilon
    ("\u03f5", "ɛ"),  # Greek lunate epsilon
    ("\u0511", "ɛ"),  # Cyrillic reversed ze
    ("\u0510", "Ɛ"),  # its capital
    ("\u2107", "Ɛ"),  # Euler constant
    ("\u2184", "ɔ"),  # Latin small reversed c
    ("\u2183", "Ɔ"),  # Roman numeral reversed one hundred
    ("\u037b", "ɔ"),  # Greek small reversed lunate sigma
    ("\u03fd", "Ɔ"),  # its capital
    ("\u1d10", "ɔ"),  # small capital open o
    ("\u03ad", "ɛ\u0301"),  # Greek epsilon with tonos: ɛ with a high tone
]


@pytest.mark.parametrize("language", ["bci_Latn", "lin_Latn"])
@pytest.mark.parametrize(("lookalike", "letter"), OPEN_E_O_CASES)
def test_each_lookalike_is_folded_in_baoule_and_lingala(language: str, lookalike: str, letter: str) -> None:
    text, rules = normalize_text(f"k{lookalike} mo", language)
    assert text == unicodedata.normalize("NFC", f"k{letter} mo")
    assert rules == ["lookalike"]


def test_the_table_covers_the_cases_tested() -> None:
    assert {c for c, _ in OPEN_E_O_CASES} <= set(LOOKALIKES["bci_Latn"])
    assert LOOKALIKES["bci_Latn"] == LOOKALIKES["lin_Latn"]


def test_greek_epsilon_plus_combining_acute_becomes_open_e_with_tone() -> None:
    # NFC turns ε + U+0301 into έ first; the fold must still give ɛ + U+0301, not a Greek letter.
    text, rules = normalize_text("mb\u03b5\u0301l\u03b5", "lin_Latn")
    assert text == "mbɛ\u0301lɛ" and rules == ["nfc", "lookalike"]


@pytest.mark.parametrize("language", ["fra_Latn", "eng_Latn", "swh_Latn", "wol_Latn"])
def test_greek_epsilon_is_not_folded_where_it_would_be_greek(language: str) -> None:
    assert normalize_text("the letter \u03b5 and \u2184", language) == ("the letter \u03b5 and \u2184", [])


def test_wolof_folds_greek_eta_into_eng() -> None:
    assert normalize_text("Sama \u03b7aam dafay metti", "wol_Latn") == (
        "Sama ŋaam dafay metti",
        ["lookalike"],
    )


def test_a_real_greek_word_is_left_alone() -> None:
    # λέξη is Greek: its ε-like letter is not a typo. The Baoulé word next to it is folded.
    text, _ = normalize_text("λέξη k\u03b5", "bci_Latn")
    assert text == "λέξη kɛ"


def test_greek_capital_epsilon_is_not_taken_for_open_e() -> None:
    # Ε (U+0395) looks like Latin E, not like Ɛ.
    assert normalize_text("\u0395", "bci_Latn") == ("\u0395", [])


# --------------------------------------------------------------------------------------------------
# Spaces, controls, NFC
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("space", [NBSP, NNBSP, THIN, "\u2003", "\u3000", "\t", "\u2028"])
def test_exotic_spaces_become_one_plain_space(space: str) -> None:
    assert normalize_text(f"Comment vas-tu{space}?", "fra_Latn") == ("Comment vas-tu ?", ["space"])


def test_space_runs_collapse_ends_are_trimmed_newlines_stay() -> None:
    assert normalize_text(f"  Nanga {NBSP} def?\nMaa ngi fi  ", "wol_Latn") == (
        "Nanga def?\nMaa ngi fi",
        ["space"],
    )


@pytest.mark.parametrize(
    "control", ["\x00", "\x07", "\x1b", "\x7f", "\x9c", ZWSP, BOM, SHY, "\u200e", "\u202e"]
)
def test_control_and_invisible_characters_are_removed(control: str) -> None:
    assert normalize_text(f"Jërë{control}jëf", "wol_Latn") == ("Jërëjëf", ["control"])


def test_tab_and_newline_are_not_controls() -> None:
    text, rules = normalize_text("a\tb\nc", "eng_Latn")
    assert text == "a b\nc" and rules == ["space"]


def test_nfc_composes_decomposed_letters() -> None:
    text, rules = normalize_text("Caf" + "e\u0301" + " bi, j" + "e\u0308" + "f", "wol_Latn")
    assert text == "Café bi, jëf" and rules == ["nfc"]
    assert unicodedata.is_normalized("NFC", text)


# --------------------------------------------------------------------------------------------------
# Apostrophes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mark", ["\u2019", "\u02bc", "\u2018", "\u02bb", "\uff07"])
def test_apostrophe_variants_become_ascii(mark: str) -> None:
    assert normalize_text(f"N awlo{mark}n", "bci_Latn") == ("N awlo'n", ["apostrophe"])
    assert normalize_text(f"it{mark}s", "eng_Latn") == ("it's", ["apostrophe"])


@pytest.mark.parametrize("mark", ["\u00b4", "`", "\u2032"])
def test_accent_backtick_and_prime_are_apostrophes_only_between_letters(mark: str) -> None:
    assert normalize_text(f"sukulu{mark}n", "bci_Latn") == ("sukulu'n", ["apostrophe"])
    # Before a word (a Baoulé tone mark in Bible text) or after a number they stay.
    assert normalize_text(f"ɔ {mark}kan 5{mark}", "bci_Latn") == (f"ɔ {mark}kan 5{mark}", [])


def test_swahili_ng_apostrophe_whatever_was_typed() -> None:
    for mark in ("\u2019", "\u02bc", "\u00b4", "`", "\u2018"):
        text, rules = normalize_text(f"Ng{mark}ombe wanakula ng{mark}ambo", "swh_Latn")
        assert text == "Ng'ombe wanakula ng'ambo" and rules == ["ng_apostrophe"]
    # No apostrophe is invented: ngoma (drum) is another word.
    assert normalize_text("ngoma", "swh_Latn") == ("ngoma", [])
    # The Swahili rule has its own switch: it applies with the general apostrophe rule off.
    off = NormalizeConfig(unify_apostrophes=False)
    assert normalize_text("ng\u2019ombe, it\u2019s", "swh_Latn", off) == (
        "ng'ombe, it\u2019s",
        ["ng_apostrophe"],
    )


# --------------------------------------------------------------------------------------------------
# Lingala tones, spelling flags
# --------------------------------------------------------------------------------------------------

TONED = "Bato nyo\u0301nso\u0301 bazali\u0301 na mbo\u0301tama, mɔ\u030ckɔ\u0301 mpɔ\u0302"


def test_lingala_tones_are_kept_by_default() -> None:
    text, rules = normalize_text(TONED, "lin_Latn")
    assert text == unicodedata.normalize("NFC", TONED) and rules == ["nfc"]
    assert "ó" in text and "\u030c" in text  # composed where possible, combining on ɔ


def test_lingala_tones_are_stripped_when_asked() -> None:
    text, rules = normalize_text(TONED, "lin_Latn", NormalizeConfig(lingala_tones="strip"))
    assert text == "Bato nyonso bazali na mbotama, mɔkɔ mpɔ"
    assert rules == ["nfc", "tones_stripped"]
    # Only Lingala: the same setting leaves French and Baoulé accents alone.
    strip = NormalizeConfig(lingala_tones="strip")
    assert normalize_text("été", "fra_Latn", strip) == ("été", [])
    assert normalize_text("ɔ\u0301 ti", "bci_Latn", strip) == ("ɔ\u0301 ti", [])


def test_lingala_tones_setting_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"corpus\.normalize\.lingala_tones"):
        config_from_dict({"corpus": {"normalize": {"lingala_tones": "remove"}}})


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("Dafa dem ci marché bi, gnu ngi fi", True),  # gn for ñ
        ("Mu dou dem", True),  # ou for u
        ("Dafa dem ja bi, ñu ngi fi", False),  # CLAD: à é ë ñ ŋ ó are right
        ("Sëriñ bi dem na Tuubaa, jàmm rekk", False),
        ("Cheikh ak Ousmane dem nañu Touba", False),  # names are capitalised: not flagged
    ],
)
def test_wolof_french_style_spelling_is_flagged_not_changed(text: str, flagged: bool) -> None:
    out, rules = normalize_text(text, "wol_Latn")
    assert out == text
    assert rules == (["flag:french_spelling"] if flagged else [])


def test_baoule_french_style_spelling_is_flagged_not_changed() -> None:
    assert normalize_text("Be kô awlo", "bci_Latn") == ("Be kô awlo", ["flag:french_spelling"])
    assert normalize_text("Bɛ kɔ awlo", "bci_Latn") == ("Bɛ kɔ awlo", [])
    assert normalize_text("A ti kpa", "bci_Latn") == ("A ti kpa", [])
    # Not a Wolof or Baoulé text: nothing to flag.
    assert normalize_text("Le café où je vais", "fra_Latn") == ("Le café où je vais", [])


# --------------------------------------------------------------------------------------------------
# Switches, purity, the Normalizer
# --------------------------------------------------------------------------------------------------

MESSY = f"  N\u2019kɔ{NBSP}sukulu k\u03b5 Caf" + "e\u0301" + f"{ZWSP}  "


@pytest.mark.parametrize(
    ("switch", "rule"),
    [
        ("strip_controls", "control"),
        ("nfc", "nfc"),
        ("unify_spaces", "space"),
        ("unify_apostrophes", "apostrophe"),
        ("fold_lookalikes", "lookalike"),
    ],
)
def test_each_rule_has_a_switch(switch: str, rule: str) -> None:
    _, on = normalize_text(MESSY, "bci_Latn")
    assert rule in on
    _, off = normalize_text(MESSY, "bci_Latn", NormalizeConfig(**{switch: False}))
    assert rule not in off
    assert set(on) - {rule} == set(off)


def test_flag_switch() -> None:
    assert normalize_text("Mu dou dem", "wol_Latn")[1] == ["flag:french_spelling"]
    assert normalize_text("Mu dou dem", "wol_Latn", NormalizeConfig(flag_french_spelling=False))[1] == []


def test_rules_are_documented_ids_in_running_order_and_idempotent() -> None:
    text, rules = normalize_text(MESSY, "bci_Latn")
    assert text == "N'kɔ sukulu kɛ Café"
    assert rules == ["control", "nfc", "space", "apostrophe", "lookalike"]
    assert set(rules) <= set(RULES) | set(FLAGS)
    assert [r for r in RULES if r in rules] == rules  # in the documented running order
    for language in ("wol_Latn", "bci_Latn", "swh_Latn", "lin_Latn", "fra_Latn", "eng_Latn"):
        once, _ = normalize_text(MESSY, language)
        assert normalize_text(once, language) == (once, [])


def test_unknown_language_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown language code 'xx_Latn'"):
        normalize_text("a", "xx_Latn")


def test_normalizer_counts_rules_and_keeps_a_few_samples() -> None:
    normalizer = Normalizer("bci_Latn", max_samples=2)
    inputs = [f"k\u03b5 {i}" for i in range(4)] + ["Ↄ ti kpa", "A ti kpa", "Be kô awlo"]
    outputs = [normalizer(text) for text in inputs]
    assert outputs[0] == ("kɛ 0", ["lookalike"]) and outputs[5] == ("A ti kpa", [])
    report = normalizer.report()
    assert report["texts"] == 7 and report["changed"] == 5
    assert report["rules"] == {"lookalike": 5, "flag:french_spelling": 1}
    assert report["lookalikes"] == {"ε→ɛ": 4, "Ↄ→Ɔ": 1}
    assert report["samples"]["lookalike"] == [
        {"before": "k\u03b5 0", "after": "kɛ 0"},
        {"before": "k\u03b5 1", "after": "kɛ 1"},
    ]
    assert report["samples"]["flag:french_spelling"] == [{"before": "Be kô awlo", "after": "Be kô awlo"}]


def test_normalizer_samples_of_long_texts_are_cut_around_the_change_and_redacted() -> None:
    long_text = "a " * 200 + "k\u03b5" + " b" * 200
    normalizer = Normalizer("lin_Latn", sample_chars=40, redact=lambda s: s.replace("b", "#"))
    normalizer(long_text)
    (sample,) = normalizer.report()["samples"]["lookalike"]
    assert sample["before"].startswith("…") and sample["before"].endswith("…")
    assert "k\u03b5" in sample["before"] and "kɛ" in sample["after"] and len(sample["after"]) < 60
    assert "b" not in sample["before"] + sample["after"]  # redacted before being kept
