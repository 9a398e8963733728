"""The one table of languages langkit knows.

Codes are FLORES-200 style (``wol_Latn``) everywhere in langkit; this table maps them once to the
ISO 639-1 / 639-3 codes that model cards and the Hugging Face Hub expect.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    code: str
    """FLORES-200 code: ISO 639-3 + ISO 15924 script, e.g. ``wol_Latn``."""
    iso639_1: str | None
    """Two-letter code where one exists (Baoulé has none)."""
    iso639_3: str
    english_name: str
    native_name: str
    is_pivot: bool
    """True for the pivot languages (French, English) that translation goes through."""
    default_pivot: str | None
    """The pivot this language is usually translated with: the language of its region's schools and
    administration (French in Senegal, Côte d'Ivoire and the Congos, English in East Africa)."""
    notes: str = ""

    @property
    def hub_code(self) -> str:
        """The code the Hub's ``language:`` metadata prefers: ISO 639-1 where it exists, else 639-3."""
        return self.iso639_1 or self.iso639_3


LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in [
        Language(
            "wol_Latn", "wo", "wol", "Wolof", "Wolof", False, "fra_Latn",
            "Senegal, Gambia. CLAD Latin orthography: à é ë ñ ŋ ó, double vowels and consonants.",
        ),
        Language(
            "bci_Latn", None, "bci", "Baoulé", "Wawle", False, "fra_Latn",
            "Côte d'Ivoire. Open vowels ɛ and ɔ; a French-style spelling (ê, ô, ou) is also common.",
        ),
        Language(
            "swh_Latn", "sw", "swh", "Swahili", "Kiswahili", False, "eng_Latn",
            "Kenya, Tanzania, Uganda, DR Congo. Apostrophe in ng' (ng'ombe).",
        ),
        Language(
            "lin_Latn", "ln", "lin", "Lingala", "Lingála", False, "fra_Latn",
            "DR Congo, Congo. Open vowels ɛ and ɔ; tone marks (á, ɛ́, ɔ́) often omitted in everyday writing.",
        ),
        Language("fra_Latn", "fr", "fra", "French", "Français", True, None),
        Language("eng_Latn", "en", "eng", "English", "English", True, None),
    ]
}

TARGET_LANGUAGES: tuple[str, ...] = tuple(c for c, lang in LANGUAGES.items() if not lang.is_pivot)
PIVOT_LANGUAGES: tuple[str, ...] = tuple(c for c, lang in LANGUAGES.items() if lang.is_pivot)


def get_language(code: str) -> Language:
    """Look up a language by its FLORES-200 code, with an error that lists the known codes."""
    try:
        return LANGUAGES[code]
    except KeyError:
        known = ", ".join(LANGUAGES)
        raise ValueError(f"unknown language code {code!r}; langkit knows: {known}") from None
