"""The one normalizer of langkit: per-language text normalization, shared by the corpus, tokenizer and
training stages, so that the model is trained and measured on exactly the text the corpus holds.

:func:`normalize_text` returns the normalized text and the ids of the rules that changed it;
:class:`Normalizer` wraps it for one language and keeps counts and before/after samples for the report.
Each rule can be switched off in :class:`~langkit.config.NormalizeConfig` (``corpus.normalize`` in a
run config). The rules run in the order below; their ids are stable (they are stored in the corpus's
``normalization`` column and in ``stats.json``):

``control``
    Remove control characters (C0 except tab and newline, DEL, C1) and invisible format characters:
    zero-width space/joiners U+200B-U+200D, bidi marks and embeddings (U+200E/F, U+202A-E, U+2066-9),
    word joiner U+2060, soft hyphen U+00AD, and the byte-order mark U+FEFF in mid-text. They are
    invisible, they split words for the tokenizer, and text copied from web pages and PDFs is full of
    them (Unicode categories Cc and Cf, The Unicode Standard ch. 23). Vertical tab, form feed and NEL
    are whitespace and go to ``space`` instead.
``nfc``
    Unicode Normalization Form C (Unicode Standard Annex #15): ``e`` + combining acute becomes ``é``,
    ``n`` + combining tilde ``ñ``. Marks with no precomposed form (ɛ́, ɔ̌) stay combining.
``space``
    No-break space U+00A0 and narrow no-break space U+202F (French typography puts them before ``; : ! ?``
    and inside « »), thin, em, en and the other Zs spaces, tab, vertical tab, form feed, NEL and the
    line/paragraph separators U+2028/U+2029 become a plain space; runs of spaces collapse to one; the
    ends are trimmed. Newlines inside a record are kept.
``ng_apostrophe`` (Swahili)
    Standard Swahili writes the velar nasal /ŋ/ before a vowel as ``ng'`` (ng'ombe "cow", ng'ambo
    "across"), distinct from ``ng`` = /ŋg/ (ngoma "drum"); the apostrophe is part of the spelling (as in
    the TUKI/BAKITA dictionaries). Whatever apostrophe-like mark follows ``ng`` before a letter (’ ʼ ‘ ´ `
    ′ ʻ) is written as ASCII '. A missing apostrophe is never inserted: ``ngombe`` may be a typo or
    another word.
``apostrophe``
    Right and left single quotation marks U+2019/U+2018, modifier letter apostrophe U+02BC, turned comma
    U+02BB, reversed-9 quote U+201B and the fullwidth apostrophe become ASCII ' (U+0027); the acute
    accent ´, backtick ` and prime ′ too, but only between two letters (``nun´n``). ASCII is the one
    form chosen because gpt-oss's pre-tokenizer (the o200k pattern in :mod:`langkit.tokenizer`) knows
    English contractions ('s 't 're 've 'm 'll 'd) with the ASCII apostrophe only, so one form keeps
    English and French pivots tokenized as the base model expects and gives each Wolof, Baoulé,
    Lingala and Swahili word one spelling. A spacing accent before a word is left alone: in Baoulé
    Bible text (mtBCI) ``ɔ ´yaci`` marks a tone, not an elision.
``lookalike`` (Baoulé, Lingala, Wolof)
    Letters from other scripts that look like the language's own are folded into them (the look-alike
    pairs are in Unicode's confusables data, UTS #39). Baoulé and Lingala write the open vowels with the
    Latin letters ɛ U+025B and ɔ U+0254 (the African Reference Alphabet, Niamey 1978; the orthography
    of Ivorian languages of the ILA, Abidjan; Lingala's usual orthography), but text in the wild often
    has Greek ε U+03B5 / ϵ U+03F5, Cyrillic ԑ U+0511 (capital Ԑ U+0510), ℇ U+2107, reversed c ↄ U+2184
    (capital Ↄ U+2183), Greek ͻ U+037B / Ͻ U+03FD or small-capital ᴐ U+1D10. Greek έ and ὲ become ɛ with
    a combining acute or grave (a Lingala tone). Wolof (CLAD) writes the velar nasal ŋ U+014B, for
    which Greek η U+03B7 is typed. The Greek capital Ε is not folded: it looks like Latin E, not Ɛ. A
    word that holds other Greek or Cyrillic letters is left alone (it is a foreign word, not a typo),
    and French, English and Swahili text is never folded (there ε would be a real Greek letter).
``tones_stripped`` (Lingala, only with ``lingala_tones: strip``)
    Lingala has high and low tones, marked in dictionaries and linguistic texts with an acute (high),
    circumflex (falling), caron (rising) and sometimes a grave (low, usually unmarked), but usually
    left unmarked in everyday writing (newspapers, the web, FLORES). ``strip`` removes these four
    marks from vowels (a e i o u ɛ ɔ) so that toned and untoned text share one spelling; ``keep``
    leaves them (NFC still applies).
``flag:french_spelling`` (Wolof, Baoulé) - a flag: the text is never changed
    Wolof: the official orthography (CLAD, the Centre de linguistique appliquée de Dakar; decree
    71-566 of 1971 on the transcription of national languages and decree 2005-992 of 21 October 2005
    on Wolof orthography and word separation) uses the letters a à b c d e é ë f g i j k l m n ñ ŋ o ó
    p q r s t u w x y. Text written the French way (``ou`` for u, ``ch`` or ``kh`` for c / x, ``dj``
    for j, ``gn`` for ñ, or the French letters â ç è ê î ï ô ù û ü œ) is flagged when a word that does
    not start with a capital (names such as Cheikh or Touba are common) has one of these.
    Baoulé: the standard orthography writes ɛ and ɔ; the French-style spelling writes them ê/è/é and
    ô, and u as ``ou``. A text with no ɛ or ɔ and a lower-case word with ê è é ô or ``ou`` is flagged.
    A flag goes to the ``normalization`` column and the counts, so a linguist can choose to filter or
    convert such text; converting is not safe to do blindly (é is a CLAD Wolof letter, ô is ambiguous).

Everything is precompiled per language and configuration; each rule is a ``str.translate`` or a
compiled regular expression guarded by a fast search, so clean text costs a few C-level scans.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from langkit.config import NormalizeConfig
from langkit.languages import get_language

__all__ = ["APOSTROPHE", "FLAGS", "RULES", "NormalizeConfig", "Normalizer", "normalize_text"]

APOSTROPHE = "'"
"""The one apostrophe kept in normalized text (U+0027, see the module docstring for why)."""

RULES: dict[str, str] = {
    "control": "control and invisible format characters removed",
    "nfc": "Unicode NFC",
    "space": "exotic spaces and tabs to a plain space, runs collapsed, ends trimmed",
    "ng_apostrophe": "Swahili ng' written with the ASCII apostrophe",
    "apostrophe": "apostrophe variants written as ASCII '",
    "lookalike": "look-alike letters from other scripts folded into the language's letters",
    "tones_stripped": "Lingala tone marks removed",
}
"""Ids of the rules that change text, in the order they run, with a one-line description."""
FLAGS: dict[str, str] = {
    "flag:french_spelling": "Wolof or Baoulé text in a French-style spelling (not changed)",
}
"""Ids of the flags: reported like rules, but the text is not changed."""

# --------------------------------------------------------------------------------------------------
# Tables (built once at import)
# --------------------------------------------------------------------------------------------------

# C0 except \t \n and the whitespace controls \v \f (which ``space`` turns into spaces), DEL, C1 except
# NEL (also whitespace), and the invisible format characters listed in the module docstring.
_CONTROL_CHARS = (
    [c for c in range(0x20) if c not in (0x09, 0x0A, 0x0B, 0x0C)]
    + [0x7F]
    + [c for c in range(0x80, 0xA0) if c != 0x85]
    + [0x00AD, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x2060, 0x2061, 0x2062, 0x2063, 0x2064, 0xFEFF]
    + list(range(0x202A, 0x202F))
    + list(range(0x2066, 0x2070))
)
_CONTROL_TABLE: dict[int, None] = dict.fromkeys(_CONTROL_CHARS)
_CONTROL_RE = re.compile("[" + "".join(re.escape(chr(c)) for c in _CONTROL_CHARS) + "]")

_SPACE_CHARS = (
    [0x09, 0x0B, 0x0C, 0x85, 0xA0, 0x1680, 0x202F, 0x205F, 0x3000, 0x2028, 0x2029]
    + list(range(0x2000, 0x200B))  # en quad .. hair space
)
_SPACE_TABLE: dict[int, str] = dict.fromkeys(_SPACE_CHARS, " ")
_SPACE_RE = re.compile("[" + "".join(re.escape(chr(c)) for c in _SPACE_CHARS) + "]")
_SPACE_RUN = re.compile(" {2,}")

# Always an apostrophe (or a single quote, for which ASCII ' serves just as well).
_APOSTROPHE_CHARS = "\u2019\u2018\u02bc\u02bb\u201b\uff07"
_APOSTROPHE_TABLE: dict[int, str] = dict.fromkeys(map(ord, _APOSTROPHE_CHARS), APOSTROPHE)
# An apostrophe only between two letters: elsewhere ´ and ` may be tone marks (Baoulé) or code.
_WORD_CONTEXT_CHARS = "\u00b4`\u2032"
_LETTER = r"[^\W\d_]"
# A plain character class: searched on every text, it must be cheap (an alternation with lookbehinds
# costs ten times more); the context is checked only where one of these characters occurs.
_APOSTROPHE_RE = re.compile(f"[{_APOSTROPHE_CHARS}{_WORD_CONTEXT_CHARS}]")
_APOSTROPHE_CONTEXT_RE = re.compile(f"(?<={_LETTER})[{_WORD_CONTEXT_CHARS}](?={_LETTER})")
_NG_APOSTROPHE_RE = re.compile(f"([Nn][Gg])[{_APOSTROPHE_CHARS}{_WORD_CONTEXT_CHARS}](?={_LETTER})")

_OPEN_E_O = {
    "\u03b5": "\u025b",  # GREEK SMALL LETTER EPSILON -> LATIN SMALL LETTER OPEN E
    "\u03f5": "\u025b",  # GREEK LUNATE EPSILON SYMBOL
    "\u0511": "\u025b",  # CYRILLIC SMALL LETTER REVERSED ZE
    "\u0510": "\u0190",  # CYRILLIC CAPITAL LETTER REVERSED ZE -> LATIN CAPITAL LETTER OPEN E
    "\u2107": "\u0190",  # EULER CONSTANT
    "\u03ad": "\u025b\u0301",  # GREEK SMALL LETTER EPSILON WITH TONOS (what NFC makes of ε + acute)
    "\u1f72": "\u025b\u0300",  # GREEK SMALL LETTER EPSILON WITH VARIA (NFC of ε + grave)
    "\u2184": "\u0254",  # LATIN SMALL LETTER REVERSED C -> LATIN SMALL LETTER OPEN O
    "\u037b": "\u0254",  # GREEK SMALL REVERSED LUNATE SIGMA SYMBOL
    "\u1d10": "\u0254",  # LATIN LETTER SMALL CAPITAL OPEN O
    "\u2183": "\u0186",  # ROMAN NUMERAL REVERSED ONE HUNDRED -> LATIN CAPITAL LETTER OPEN O
    "\u03fd": "\u0186",  # GREEK CAPITAL REVERSED LUNATE SIGMA SYMBOL
}
_ENG = {
    "\u03b7": "\u014b",  # GREEK SMALL LETTER ETA -> LATIN SMALL LETTER ENG
}
LOOKALIKES: dict[str, dict[str, str]] = {"bci_Latn": _OPEN_E_O, "lin_Latn": _OPEN_E_O, "wol_Latn": _ENG}
"""Per language: look-alike character -> the language's letter (other languages: none)."""
# Greek, Cyrillic (with its supplement) and Greek Extended: a word with any of these left after
# folding is a foreign word and is left as it was.
_FOREIGN_RE = re.compile("[\u0370-\u03ff\u0400-\u052f\u1f00-\u1fff]")
_WORD_RE = re.compile(r"\S+")

_TONE_MARKS = "\u0300\u0301\u0302\u030c"  # grave, acute, circumflex, caron
_TONE_RE = re.compile(f"(?<=[aeiouɛɔAEIOUƐƆ])[{_TONE_MARKS}]+")

# French-style spelling markers, in a word that starts with a lower-case letter (names are capitalised).
_WOL_FRENCH_RE = re.compile(r"\b[a-zß-ÿœŋ][^\W\d_]*?(?:ou|ch|dj|kh|gn|[âäçèêîïôöùûüÿœæ])")
_BCI_FRENCH_RE = re.compile(r"\b[a-zß-ÿœ][^\W\d_]*?(?:ou|[êèéô])")
# Cheap pre-checks (any marker anywhere) before the word-level searches above, which are slow.
_WOL_MARKER_RE = re.compile(r"(?:o(?=u)|c(?=h)|d(?=j)|k(?=h)|g(?=n)|[âäçèêîïôöùûüÿœæ])")
_BCI_MARKER_RE = re.compile(r"(?:o(?=u)|[êèéô])")
_BCI_OPEN_VOWELS_RE = re.compile("[ɛɔƐƆ]")


# --------------------------------------------------------------------------------------------------
# The normalizer
# --------------------------------------------------------------------------------------------------

Trace = list[tuple[str, str, str]]
"""(rule id, text before the rule, text after it), for every rule that fired."""


@dataclass(frozen=True)
class _Plan:
    """What to run for one language under one configuration, decided once."""

    controls: bool
    nfc: bool
    spaces: bool
    apostrophes: bool
    ng_apostrophe: bool
    lookalike_table: dict[int, str] | None
    lookalike_re: re.Pattern[str] | None
    strip_tones: bool
    french_spelling: str  # "", "wol" or "bci"


def _cfg_key(cfg: NormalizeConfig) -> tuple[Any, ...]:
    return (
        cfg.nfc,
        cfg.fold_lookalikes,
        cfg.unify_apostrophes,
        cfg.unify_spaces,
        cfg.strip_controls,
        cfg.lingala_tones,
        cfg.swahili_ng_apostrophe,
        cfg.flag_french_spelling,
    )


@lru_cache(maxsize=64)
def _plan(language: str, key: tuple[Any, ...]) -> _Plan:
    get_language(language)  # an unknown code is an error, not silently "no rules"
    nfc, fold, apostrophes, spaces, controls, tones, ng, french = key
    if tones not in ("keep", "strip"):
        raise ValueError(f"lingala_tones must be keep or strip, got {tones!r}")
    table = LOOKALIKES.get(language) if fold else None
    return _Plan(
        controls=controls,
        nfc=nfc,
        spaces=spaces,
        apostrophes=apostrophes,
        ng_apostrophe=ng and language == "swh_Latn",
        lookalike_table=str.maketrans(table) if table else None,
        lookalike_re=re.compile("[" + "".join(table) + "]") if table else None,
        strip_tones=tones == "strip" and language == "lin_Latn",
        french_spelling={"wol_Latn": "wol", "bci_Latn": "bci"}.get(language, "") if french else "",
    )


_DEFAULT_KEY = _cfg_key(NormalizeConfig())


def _fold_lookalikes(text: str, table: dict[int, str]) -> str:
    folded = text.translate(table)
    if not _FOREIGN_RE.search(folded):
        return folded

    # Greek or Cyrillic letters remain: fold only the words made of Latin letters plus look-alikes.
    def word(m: re.Match[str]) -> str:
        w = m.group(0).translate(table)
        return m.group(0) if _FOREIGN_RE.search(w) else w

    return _WORD_RE.sub(word, text)


def _run(text: str, plan: _Plan, rules: list[str], trace: Trace | None) -> str:
    """Apply ``plan`` to ``text``, appending the id of every rule that changed it to ``rules``."""

    def record(rule: str, before: str, after: str) -> None:
        rules.append(rule)
        if trace is not None:
            trace.append((rule, before, after))

    if plan.controls and _CONTROL_RE.search(text):
        new = text.translate(_CONTROL_TABLE)
        record("control", text, new)
        text = new
    if plan.nfc and not unicodedata.is_normalized("NFC", text):
        new = unicodedata.normalize("NFC", text)
        record("nfc", text, new)
        text = new
    if plan.spaces and (
        _SPACE_RE.search(text) or "  " in text or (text and (text[0].isspace() or text[-1].isspace()))
    ):
        new = _SPACE_RUN.sub(" ", text.translate(_SPACE_TABLE)).strip()
        if new != text:
            record("space", text, new)
            text = new
    if plan.ng_apostrophe and _NG_APOSTROPHE_RE.search(text):
        new = _NG_APOSTROPHE_RE.sub(r"\1" + APOSTROPHE, text)
        if new != text:
            record("ng_apostrophe", text, new)
            text = new
    if plan.apostrophes and _APOSTROPHE_RE.search(text):
        new = _APOSTROPHE_CONTEXT_RE.sub(APOSTROPHE, text.translate(_APOSTROPHE_TABLE))
        if new != text:
            record("apostrophe", text, new)
            text = new
    if plan.lookalike_table is not None and plan.lookalike_re is not None and plan.lookalike_re.search(text):
        new = _fold_lookalikes(text, plan.lookalike_table)
        if new != text:
            record("lookalike", text, new)
            text = new
    if plan.strip_tones and not text.isascii():
        decomposed = unicodedata.normalize("NFD", text)
        stripped = _TONE_RE.sub("", decomposed)
        if stripped != decomposed:
            new = unicodedata.normalize("NFC", stripped) if plan.nfc else stripped
            record("tones_stripped", text, new)
            text = new
    if plan.french_spelling == "wol" and _WOL_MARKER_RE.search(text) and _WOL_FRENCH_RE.search(text):
        record("flag:french_spelling", text, text)
    elif (
        plan.french_spelling == "bci"
        and _BCI_MARKER_RE.search(text)
        and not _BCI_OPEN_VOWELS_RE.search(text)
        and _BCI_FRENCH_RE.search(text)
    ):
        record("flag:french_spelling", text, text)
    return text


def normalize_text(text: str, language: str, cfg: NormalizeConfig | None = None) -> tuple[str, list[str]]:
    """Normalize ``text`` written in ``language`` (a FLORES-200 code) by that language's rules.

    Returns the normalized text and the ids of the rules that changed it, in the order they ran
    (:data:`RULES`), followed by any flag that applies (:data:`FLAGS`; flags never change the text).
    An empty list means the text came through unchanged and unflagged. Pure: same input, same output.
    Raises ``ValueError`` for an unknown language code.
    """
    plan = _plan(language, _DEFAULT_KEY if cfg is None else _cfg_key(cfg))
    rules: list[str] = []
    return _run(text, plan, rules, None), rules


def _excerpt(before: str, after: str, width: int) -> tuple[str, str]:
    """The part of ``before``/``after`` around their differences, cut to about ``width`` characters."""
    if len(before) <= width and len(after) <= width:
        return before, after
    start = 0
    limit = min(len(before), len(after))
    while start < limit and before[start] == after[start]:
        start += 1
    end_b, end_a = len(before), len(after)
    while end_b > start and end_a > start and before[end_b - 1] == after[end_a - 1]:
        end_b -= 1
        end_a -= 1
    context = max(10, (width - max(end_b, end_a) + start) // 2)
    lo = max(0, start - context)

    def cut(s: str, end: int) -> str:
        hi = min(len(s), end + context)
        return ("…" if lo > 0 else "") + s[lo:hi] + ("…" if hi < len(s) else "")

    return cut(before, end_b), cut(after, end_a)


@dataclass
class Normalizer:
    """:func:`normalize_text` for one language, counting what each rule did, for the corpus report.

    ``counts[rule]`` is the number of texts each rule changed (or flagged); ``lookalikes`` counts the
    folded characters (``"ε→ɛ"``); ``samples[rule]`` keeps the first ``max_samples`` before/after
    pairs of each rule, cut to the part around the change. Call it like the function:
    ``text, rules = normalizer(raw)``. ``redact`` is applied to a sample's texts before they are kept
    (the corpus stage passes its PII scrubber, so that no phone number ends up in ``stats.json``).
    """

    language: str
    cfg: NormalizeConfig = field(default_factory=NormalizeConfig)
    max_samples: int = 5
    """Before/after pairs kept per rule."""
    sample_chars: int = 160
    """Longest sample kept, in characters (longer ones are cut around the change)."""
    redact: Callable[[str], str] | None = None
    """Applied to both texts of a sample before it is kept."""
    texts: int = 0
    """Texts normalized."""
    changed: int = 0
    """Texts that at least one rule changed (flags alone do not count)."""
    counts: Counter[str] = field(default_factory=Counter)
    lookalikes: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._plan = _plan(self.language, _cfg_key(self.cfg))
        table = LOOKALIKES.get(self.language) if self.cfg.fold_lookalikes else None
        self._lookalike_chars = frozenset(table or ())
        self._lookalike_names = {k: f"{k}→{v}" for k, v in (table or {}).items()}

    def __call__(self, text: str) -> tuple[str, list[str]]:
        rules: list[str] = []
        trace: Trace = []
        out = _run(text, self._plan, rules, trace)
        self.texts += 1
        if not rules:
            return out, rules
        if any(not r.startswith("flag:") for r in rules):
            self.changed += 1
        self.counts.update(rules)
        for rule, before, after in trace:
            if rule == "lookalike":
                for ch in self._lookalike_chars.intersection(before):
                    self.lookalikes[self._lookalike_names[ch]] += before.count(ch) - after.count(ch)
            kept = self.samples.setdefault(rule, [])
            if len(kept) < self.max_samples:
                if self.redact is not None:
                    before, after = self.redact(before), self.redact(after)
                b, a = _excerpt(before, after, self.sample_chars)
                kept.append({"before": b, "after": a})
        return out, rules

    def report(self) -> dict[str, Any]:
        """Counts and samples as plain data (for ``stats.json``): rules in their running order."""
        order = {rule: i for i, rule in enumerate([*RULES, *FLAGS])}
        rules = sorted(self.counts, key=lambda r: order.get(r, len(order)))
        return {
            "texts": self.texts,
            "changed": self.changed,
            "rules": {r: self.counts[r] for r in rules},
            "lookalikes": dict(sorted(self.lookalikes.items())),
            "samples": {r: self.samples[r] for r in rules if r in self.samples},
        }
