"""Offline language identification: the built-in identifier on sentences of the six languages, the filter
that drops French or English lines from a target-language source, and the GlotLID adapter."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from langkit.config import ConfigError, LangIdConfig, config_from_dict
from langkit.corpus.langid import FastTextIdentifier, FunctionWordIdentifier, LangIdFilter, make_identifier

# Sentences written for these tests.
SENTENCES = {
    "wol_Latn": [
        "Dama bëgg a dem ci kër ga ak sama yaay.",
        "Xale yi dañuy jàng ci lekool bi tey.",
        "Lan nga xam ci mbir mi?",
    ],
    "bci_Latn": [
        "Kɛ ɔ ti kpa'n, be kɔ awlo nun.",
        "Sran mun be ngba be kan ndɛ kpa.",
        "Ɔ fa like nga i nin ɔ bo'n.",
    ],
    "lin_Latn": [
        "Bana bazali kotánga na kelasi lelo.",
        "Tozali na mosala mingi na mboka oyo.",
        "Moto nyonso azali na makoki ya kozala malamu.",
    ],
    "swh_Latn": [
        "Watoto wanasoma katika shule ya kijiji.",
        "Serikali imesema kwamba mvua itanyesha kesho.",
        "Mimi na wewe tutaenda sokoni pamoja.",
    ],
    "fra_Latn": [
        "Les enfants vont à l'école tous les jours.",
        "Le gouvernement a annoncé une nouvelle loi hier.",
        "Je pense que nous devons partir avant la nuit.",
    ],
    "eng_Latn": [
        "The children go to school every day.",
        "The government said that the rain would come tomorrow.",
        "I think we should leave before it gets dark.",
    ],
}


@pytest.mark.parametrize(("language", "text"), [(lang, s) for lang, ss in SENTENCES.items() for s in ss])
def test_builtin_identifier_recognises_the_six_languages(language: str, text: str) -> None:
    code, score = FunctionWordIdentifier().predict(text)
    assert code == language, FunctionWordIdentifier().scores(text)
    assert 0.0 < score <= 1.0


def test_builtin_identifier_ignores_tones_open_vowels_and_case() -> None:
    ident = FunctionWordIdentifier()
    assert ident.predict("MOTO NYƆ́NSƆ AZALÍ NA MAKOKÍ")[0] == "lin_Latn"
    assert ident.predict("") == ("und", 0.0)
    assert ident.predict("12345 !!!") == ("und", 0.0)


def test_little_evidence_gives_a_low_score() -> None:
    ident = FunctionWordIdentifier()
    _, one_word = ident.predict("Le Sénégal")
    _, many_words = ident.predict(SENTENCES["fra_Latn"][0])
    assert one_word < 0.4 <= many_words


def test_french_and_english_lines_in_a_wolof_source_are_dropped() -> None:
    filt = LangIdFilter(LangIdConfig())
    for text in SENTENCES["fra_Latn"]:
        assert filt(text, "wol_Latn") == "langid:fra_Latn"
    for text in SENTENCES["eng_Latn"]:
        assert filt(text, "wol_Latn") == "langid:eng_Latn"
    for language in ("wol_Latn", "bci_Latn", "lin_Latn", "swh_Latn"):
        for text in SENTENCES[language]:
            assert filt(text, language) is None, text


def test_short_texts_thresholds_and_drop_languages() -> None:
    french = SENTENCES["fra_Latn"][1]
    assert LangIdFilter(LangIdConfig())("Merci beaucoup.", "wol_Latn") is None  # 2 words: too few to judge
    assert (
        LangIdFilter(LangIdConfig(min_words=1))("Merci beaucoup pour tout.", "wol_Latn") == "langid:fra_Latn"
    )
    # A per-language threshold: a Baoulé source that tolerates anything.
    relaxed = LangIdFilter(LangIdConfig(thresholds={"bci_Latn": 1.0}))
    assert relaxed(french, "bci_Latn") is None and relaxed(french, "wol_Latn") == "langid:fra_Latn"
    # Only the pivots drop: a Swahili sentence in a Lingala source is then kept.
    pivots_only = LangIdFilter(LangIdConfig(drop_languages=["fra_Latn", "eng_Latn"]))
    assert pivots_only(SENTENCES["swh_Latn"][1], "lin_Latn") is None
    assert pivots_only(french, "lin_Latn") == "langid:fra_Latn"


class FakeFastText:
    """What fastText's model.predict returns: labels with the __label__ prefix, and probabilities."""

    def __init__(self, label: str, prob: float) -> None:
        self.label, self.prob, self.seen = label, prob, [""]

    def predict(self, text: str, k: int = 1) -> tuple[tuple[str, ...], Any]:
        self.seen.append(text)
        return (f"__label__{self.label}",), [self.prob]


def test_glotlid_adapter_maps_labels_and_feeds_one_line() -> None:
    model = FakeFastText("swa_Latn", 0.93)
    ident = FastTextIdentifier(model=model)
    assert ident.predict("Habari\nza asubuhi") == ("swh_Latn", 0.93)
    assert model.seen[-1] == "Habari za asubuhi"  # fastText refuses newlines
    filt = LangIdFilter(LangIdConfig(), FastTextIdentifier(model=FakeFastText("fra_Latn", 0.99)))
    assert filt("Il fait beau ce matin.", "wol_Latn") == "langid:fra_Latn"
    unsure = LangIdFilter(LangIdConfig(), FastTextIdentifier(model=FakeFastText("fra_Latn", 0.2)))
    assert unsure("Il fait beau ce matin.", "wol_Latn") is None


def test_glotlid_without_fasttext_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fasttext", None)  # as if it were not installed
    with pytest.raises(ImportError, match="fasttext"):
        make_identifier(LangIdConfig(backend="glotlid", model_path="/models/glotlid/model.bin"))
    assert isinstance(make_identifier(LangIdConfig()), FunctionWordIdentifier)


def test_langid_config_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"corpus\.langid\.backend"):
        config_from_dict({"corpus": {"langid": {"backend": "cld3"}}})
    with pytest.raises(ConfigError, match=r"corpus\.langid\.model_path"):
        config_from_dict({"corpus": {"langid": {"backend": "glotlid"}}})
    with pytest.raises(ConfigError, match=r"corpus\.langid\.thresholds\.xx_Latn"):
        config_from_dict({"corpus": {"langid": {"thresholds": {"xx_Latn": 0.5}}}})
    cfg = config_from_dict({"corpus": {"langid": {"thresholds": {"bci_Latn": 0.7}}}})
    assert cfg.corpus.langid.thresholds == {"bci_Latn": 0.7}
