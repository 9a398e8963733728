"""Offline language identification: find the French or English lines inside a Wolof (or Baoulé,
Swahili, Lingala) source.

An identifier is anything with ``predict(text) -> (code, score)``: a FLORES-200 code and a confidence
in [0, 1] (:class:`LanguageIdentifier`). Two are here:

* :class:`FunctionWordIdentifier` (``backend: builtin``), written for langkit, needs nothing: it scores
  each language by the share of the text's words that are among that language's most common words
  (articles, pronouns, particles, auxiliaries, conjunctions, frequent verbs and nouns; the lists
  below were written for this module from general knowledge of the languages, not taken from any
  corpus). Ordinary sentences are dominated by such words, and the six languages share few of them,
  so a French sentence in a Wolof file is recognised with a handful of words; a few letters that only
  some of the languages use (ɛ ɔ, ë ñ ŋ, ç œ) add evidence. It knows only the six languages.
* :class:`FastTextIdentifier` (``backend: glotlid``) runs a GlotLID fastText model (``model.bin`` from
  the Hub repository cis-lmu/glotlid, which covers wol_Latn, bci_Latn, swh_Latn, lin_Latn among 2,000
  languages) from a local path. It needs the ``fasttext`` package (or a fork such as
  ``fasttext-wheel``), which is optional and imported only when this backend is used.

:class:`LangIdFilter` turns predictions into drop reasons: a record of a source in language X is
dropped as ``langid:Y`` when the identifier says Y (not X) with a score at or above X's threshold, and
the text has enough words for the prediction to mean something.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any, Protocol

from langkit.config import LangIdConfig
from langkit.utils import get_logger

log = get_logger("corpus.langid")

__all__ = [
    "FastTextIdentifier",
    "FunctionWordIdentifier",
    "LangIdFilter",
    "LanguageIdentifier",
    "make_identifier",
]


class LanguageIdentifier(Protocol):
    """What the corpus stage needs of a language identifier."""

    def predict(self, text: str) -> tuple[str, float]:
        """The most likely language of ``text`` (a FLORES-200 code) and a confidence in [0, 1]."""
        ...


# --------------------------------------------------------------------------------------------------
# The built-in identifier: common words of the six languages
# --------------------------------------------------------------------------------------------------

# Written in the languages' usual spellings; lookups fold case, diacritics and ɛ/ɔ (see _fold), so
# "kɛ", "ke" and "kè" are one key and Lingala written with or without open vowels and tones matches.
COMMON_WORDS: dict[str, str] = {
    "wol_Latn": """
        ci ak ag la na ne nga mu ma nu ñu yi bi gi ji li mi si wi ki ba ga ja ka ya wa yu bu gu ju lu
        su ku fu fi fa foofu fii ca ko mo moo mooy moom man yow nun yeen ñoom ñoo sama sa seen sunu
        dafa dafay dama damay danga dangay dañu dañuy dina dinaa dinga dinañu dinanu nañu naa ngi
        nanga maa mungi maangi nekk nekkoon am amul amoon amna du dula duñu duma dinu def defar dem
        demoon ñëw wax waxoon xam xamul mën mëna mënul gëna gën bëgg bëggoon jàng jàngal lekk naan
        toog gis gisoon jox joxe jël indi yobbu dox waaye walla wala ndax ngir te bala ginnaaw noonu
        nii naka nan lan ku fan kan kañ ban yan lii loolu lee yii yooyu googu bii boobu gii gee ay
        benn ñaar ñett ñeent juróom fukk téeméer junni lépp yépp bépp képp rekk tey démb ëllëg léegi
        ñi nit jigéen góor xale réew dëkk kër liggéey xew yoon waxtu at bés suba ngoon guddi jàmm
        jërëjëf waaw déedéet baax bon rafet bees mag ndaw lool bari tuuti itam tamit sax kon wàll
        doon woon oon ñeel ëpp yàgg boroom mbir ndaje jëfandikoo daje jot xool àddina luy ñuy muy
        dañoo dafay mbindaan yàlla degg dégg topp jëm jëkk njëkk mujj ñaata ñepp ken dara leneen
        yeneen meneen yeboo jéego sàkk xëy ndey baay yaay doom jabar jëkkër nawet noor
    """,
    "bci_Latn": """
        ɔ i be a e n o kɛ nun mɔ nin yɛ sɔ ti su kun ba wa mun sran like nga fa wun man si ndɛ kpa
        dan lɛ bɔ fin ngba yo kan se sɛ le wie nian ko kɔ wo di bo dɔ aniɛn akwaba mo yalɛ klo ase
        nzue wla uflɛ nvle awlo aliɛ ajalɛ sa nanwlɛ ninnge blɛ cɛn afuɛ anglo asiɛ sika nzan nyin
        nyan yi wu wi fɛ tɔ jra tran bla bian kwlakwla kwla mian nɛn liɛ wan sie kle nnyɔn nsan nnan
        nnun nyanmiɛn mmla kaci yolɛ kunndɛ wafa sunman tɛtɛ naan nan afin ekun osu lika nun mmua
        kɛn flɛ wlɛ sɔfuɛ fluwa nzɔliɛ ngunmin bue sanngɛ sangɛ yɛle yɛ'n ɔli wunmiɛn kpɛ kpɛn
        ɲin nyrun jɔ jɔlɛ ndɛn dun sin fite ju kusu blo atin awie mlan mian fɔ ngue wuli sɛli
        aunnvuɛ klɔ ngbɛn lafi kɛkɛ kpli kanngan
    """,
    "lin_Latn": """
        na ya ezali azali bazali tozali nazali ozali ezalaki azalaki bazalaki mpe pe te oyo wana awa
        ndenge lokola kasi soki nyonso mingi mosusu misusu basusu malamu mbote matondo bongo bango ye
        ngai yo biso bino kati likolo nse sima nsima liboso mokolo mikolo mbula eloko biloko makambo
        likambo ntango epai elongo kaka lisusu boye ekolo mboka bato moto bana mwana mama tata mai
        nzambe lelo lobi yango wapi nani nini mpenza moke monene mibale misato moko ata to mpo mpona
        ete ke ko ba mo ndako mosala misala koloba kosala kokende kozala kopesa kozwa koyeba kolinga
        kotanga kokoma kobanda kosalisa kotala koyoka alobaki alobi balobi esalemi ekoki akoki bakoki
        esengeli kuna boni eye molongo mokili zamba moi butu tongo mbongo bilei kolia komela bazwi
        azwi ezwi ekozala akozala bakozala tokozala bakokaki ekokaki bakei akei kokoka kosalela
        bayebi ayebi kobongisa bakisi mokonzi bakonzi leta mobeko mibeko lingomba bomoi kimya
        bolingo makasi mikuse milayi bokeseni ndenge nini mpamba moninga baninga ebele
        mokolo esika bisika tii kino uta wuta
    """,
    "swh_Latn": """
        na ya wa kwa ni za la cha vya katika kwenye pia hii hiyo huo hizo hao kama lakini au sana watu
        mtu kuwa kwamba ambao ambayo ambapo ambaye ambazo ambacho baada kabla zaidi moja mbili tatu nne
        tano hata tu si bado kila yake wake zake chake lake yao wao zao sisi mimi wewe yeye nini nani
        wapi lini jinsi habari asante karibu ndiyo hapana leo jana kesho nchi serikali mwaka miaka
        siku kutoka hadi mpaka sasa pamoja kubwa nyingi wengi huu wetu yetu chini juu ndani nje kati
        kuhusu vile pale hapa huko kuna kulikuwa alikuwa walikuwa inaweza anaweza wakati sababu ili
        kisha hivyo hilo kufanya alisema amesema wanasema mwa hivi kazi maji mji jiji shule watoto
        mtoto binadamu haki uhuru kupata kutumia mkubwa mdogo tena lazima bila zote wote yote kwao
        kwake ina ana wana kitu vitu jambo mambo eneo dunia sehemu muda saa mwingine wengine
        nyingine ingawa kwanza mwisho vizuri nzuri mbalimbali hasa zilizo iliyo aliyekuwa hakuna
        ndio kubwa mbele nyuma baadhi kadhaa wanaweza alisema hayo haya yako yangu wangu yenye
        wenye chenye lenye kuwa kwani mama baba kaka dada mingi mengi
    """,
    "fra_Latn": """
        le la les de des du un une et est en dans que qui pour pas ne sur au aux avec il elle ils
        elles nous vous je tu on ce cette ces cet son sa ses leur leurs mais ou plus par se été être
        avoir a ont sont était étaient fait comme tout tous toute toutes aussi même très bien merci
        bonjour oui non y d l qu c n s j m après avant entre sans sous chez deux trois peut doit
        ainsi alors donc car quand où dont lui eux moi toi mon ma mes ton ta tes notre nos votre vos
        quelque autre autres celui celle ceux cela ça ici là depuis pendant selon vers contre encore
        déjà jamais toujours aujourd hui monde pays ans année années temps jour jours personnes homme
        femme enfants droit droits premier première grand grande nouveau nouvelle plusieurs certains
        avait faire dit lors afin peu beaucoup trop rien personne chaque tout également plus moins
        après cependant pourquoi comment quoi sera seront serait pourrait était fut suis es sommes
        êtes avez avons ai as veut vais va vont chaque aller vient voir savoir prendre vouloir bon
        bonne petit petite dernier dernière maison école travail vie enfant homme ville nuit eau
        demain hier pense
    """,
    "eng_Latn": """
        the of and to in is was it that for on with as by at be are this from or an have has had
        not but they he she we you i his her their its which who will would can could been were
        there more also one two about after all some than when what how do does did so if up out
        into over new my your our them these those thank hello yes no s t very many most other
        such only just first people time year years said may should because through where while
        between during each both any under world state government us being made make like well
        even back then him me said says get got much before since until against around however
        why whom whose here now own same few never always often still again every day days go goes
        going went come came see saw know knew take took want good great little long old right big
        high small large next last home school work life child children man men woman women house
        country city week today tomorrow night water think
    """,
}
"""Common words of each language, space-separated (written for langkit, see the module docstring)."""

# Letters that only some of the six languages use, and how much one occurrence counts (in words).
_LETTER_HINTS: dict[str, tuple[tuple[str, ...], float]] = {
    "ɛ": (("bci_Latn", "lin_Latn"), 0.5),
    "ɔ": (("bci_Latn", "lin_Latn"), 0.5),
    "ë": (("wol_Latn",), 1.0),
    "ñ": (("wol_Latn",), 1.0),
    "ŋ": (("wol_Latn",), 1.0),
    "ç": (("fra_Latn",), 1.0),
    "œ": (("fra_Latn",), 1.0),
    "ù": (("fra_Latn",), 1.0),
}

# Combining marks go (after NFD), the open vowels become plain ones: keys ignore tones, accents and
# the choice between ɛ/e and ɔ/o, which writers of Lingala and Baoulé make differently.
# (A regex substitution and two str.replace calls: str.translate with a dict is several times slower.)
_COMBINING_RE = re.compile("[\u0300-\u036f]+")
_TOKEN_RE = re.compile(r"[^\W\d_]+")


def _fold(text: str) -> str:
    text = text.lower()
    if text.isascii():
        return text
    text = _COMBINING_RE.sub("", unicodedata.normalize("NFD", text))
    return text.replace("ɛ", "e").replace("ɔ", "o")


class FunctionWordIdentifier:
    """The built-in identifier for the six languages: common-word shares plus a few telling letters.

    The evidence for a language is the number of the text's words in its common-word list (a word in
    the lists of k languages counts 1/k for each) plus the letter hints. ``predict`` returns the
    language with the most evidence and, as its score, its share of all the evidence, shrunk towards
    0 when there is little evidence (``evidence / (evidence + prior)``): two shared words say less
    than ten words of one language.
    """

    def __init__(self, words: dict[str, str] | None = None, prior: float = 2.0) -> None:
        words = COMMON_WORDS if words is None else words
        self.languages = tuple(words)
        owners: dict[str, set[int]] = {}
        for i, code in enumerate(self.languages):
            for word in words[code].split():
                owners.setdefault(_fold(word), set()).add(i)
        # word -> ((language index, weight), ...), weights 1/k over the k languages that use the word.
        self._table: dict[str, tuple[tuple[int, float], ...]] = {
            w: tuple((i, 1.0 / len(langs)) for i in sorted(langs)) for w, langs in owners.items()
        }
        self._hints = {
            ch: (tuple(self.languages.index(c) for c in codes if c in self.languages), weight)
            for ch, (codes, weight) in _LETTER_HINTS.items()
        }
        self._hint_re = re.compile("[" + "".join(_LETTER_HINTS) + "]")
        self.prior = prior

    def scores(self, text: str) -> dict[str, float]:
        """The evidence for each language (in words); all zero when nothing was recognised."""
        evidence = [0.0] * len(self.languages)
        table = self._table
        for token in _TOKEN_RE.findall(_fold(text)):
            hit = table.get(token)
            if hit:
                for i, weight in hit:
                    evidence[i] += weight
        if not text.isascii():
            for ch in self._hint_re.findall(text.lower()):
                langs, weight = self._hints[ch]
                for i in langs:
                    evidence[i] += weight / len(langs)
        return dict(zip(self.languages, evidence, strict=True))

    def predict(self, text: str) -> tuple[str, float]:
        scores = self.scores(text)
        total = sum(scores.values())
        if total <= 0:
            return "und", 0.0
        code = max(scores, key=scores.__getitem__)
        best = scores[code]
        return code, (best / total) * (best / (best + self.prior))


# --------------------------------------------------------------------------------------------------
# GlotLID (fastText), optional
# --------------------------------------------------------------------------------------------------

# GlotLID and other models sometimes use the macrolanguage or a bare ISO 639-3 code.
_CODE_ALIASES = {
    "swa_Latn": "swh_Latn",
    "swa": "swh_Latn",
    "swh": "swh_Latn",
    "wol": "wol_Latn",
    "bci": "bci_Latn",
    "lin": "lin_Latn",
    "fra": "fra_Latn",
    "eng": "eng_Latn",
}


class FastTextIdentifier:
    """A fastText language-identification model (GlotLID's ``model.bin``) loaded from a local path.

    ``model`` may be given instead of ``path``: any object with fastText's ``predict(text, k)`` returning
    (labels, probabilities), which is how the tests run without fastText installed.
    """

    def __init__(self, path: str = "", model: Any = None, label_prefix: str = "__label__") -> None:
        if model is None:
            if not path:
                raise ValueError("corpus.langid.model_path must point at a GlotLID/fastText model.bin")
            try:
                import fasttext  # optional: see the module docstring
            except ImportError as err:
                raise ImportError(
                    "corpus.langid.backend 'glotlid' needs the fasttext package (pip install fasttext-wheel)"
                ) from err
            model = fasttext.load_model(path)
        self.model = model
        self.label_prefix = label_prefix

    def predict(self, text: str) -> tuple[str, float]:
        # fastText refuses newlines (it predicts line by line).
        labels, probs = self.model.predict(" ".join(text.split()), k=1)
        if not labels:
            return "und", 0.0
        code = str(labels[0]).removeprefix(self.label_prefix)
        return _CODE_ALIASES.get(code, code), min(1.0, float(probs[0]))


def make_identifier(cfg: LangIdConfig) -> LanguageIdentifier:
    """The identifier that ``cfg.backend`` names."""
    if cfg.backend == "glotlid":
        return FastTextIdentifier(cfg.model_path)
    return FunctionWordIdentifier()


# --------------------------------------------------------------------------------------------------
# The filter
# --------------------------------------------------------------------------------------------------


class LangIdFilter:
    """Drop reasons from language identification, for the records of sources in one language."""

    def __init__(self, cfg: LangIdConfig, identifier: LanguageIdentifier | None = None) -> None:
        self.cfg = cfg
        self.identifier = identifier if identifier is not None else make_identifier(cfg)

    def threshold(self, language: str) -> float:
        return self.cfg.thresholds.get(language, self.cfg.threshold)

    def __call__(self, text: str, language: str) -> str | None:
        """``langid:CODE`` when ``text`` (from a source in ``language``) is confidently in language CODE."""
        if len(text.split()) < self.cfg.min_words:
            return None
        code, score = self.identifier.predict(text)
        if code in (language, "und") or (self.cfg.drop_languages and code not in self.cfg.drop_languages):
            return None
        if not math.isfinite(score) or score < self.threshold(language):
            return None
        return f"langid:{code}"
