"""The source catalogue: one YAML card per known public source of text (``corpora/sources/<id>.yaml``).

A card says where a source lives (Hugging Face id or address), which of langkit's languages it has,
its splits and format, its licence and what that licence allows (``redistribution``), and how to cite
it. A corpus source names its card with ``card: <id>``, which fills its licence and redistribution
terms (:func:`langkit.corpus.licences.resolve_sources`); ``langkit corpus sources`` lists the cards.

Cards are written by hand from what the team knows; ``verify: true`` marks a card with a fact nobody
has checked against the source yet (its notes say which). Unknown keys are an error naming the file
and the key, like unknown config keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from langkit.languages import LANGUAGES

CATALOG_DIR = Path(__file__).resolve().parents[2] / "corpora" / "sources"
"""Where the cards live in a source checkout of langkit."""
REDISTRIBUTION = ("open", "share-alike", "non-commercial", "no-redistribution")
"""What a licence allows, from most to least permissive: ``open`` (share and adapt, with attribution
at most), ``share-alike`` (derived data must keep the licence), ``non-commercial`` (no commercial
use), ``no-redistribution`` (may not be shared, or the terms are unknown)."""


class CatalogError(ValueError):
    """A malformed card, with its file in the message."""


@dataclass(frozen=True)
class SourceCard:
    """One public source of text for langkit's languages."""

    id: str
    """Short, stable id (the file's name without ``.yaml``), used as ``card:`` in a corpus source."""
    name: str
    """Human-readable name."""
    languages: list[str]
    """FLORES-200 codes of langkit's languages the source has (targets and pivots)."""
    license: str
    """SPDX identifier where one exists (``CC-BY-SA-4.0``), else ``other`` or ``unknown`` (see notes)."""
    redistribution: str
    """One of :data:`REDISTRIBUTION`."""
    citation: str
    """BibTeX entry or plain reference."""
    hf_id: str = ""
    """Hugging Face dataset id, when the source is on the Hub."""
    url: str = ""
    """Home page or download address."""
    splits: list[str] = field(default_factory=list)
    """The splits the source is published with (empty: one undivided collection)."""
    format: str = ""
    """How the data is stored (``parquet``, ``jsonl``, ``tsv``, ``text, line-aligned``...)."""
    eval_only: bool = False
    """An evaluation set: never train on it, and decontaminate training data against it."""
    notes: str = ""
    """What a curator should know: coverage, quality, gating, caveats, what is unverified."""
    verify: bool = False
    """True when some fact on the card has not been checked against the source (the notes say which)."""
    file: str = field(default="", compare=False)
    """The YAML file the card was read from (set by the loader)."""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "file"}


_REQUIRED = ("id", "name", "languages", "license", "redistribution", "citation")
_LISTS = ("languages", "splits")
_BOOLS = ("eval_only", "verify")


def load_card(path: Path) -> SourceCard:
    """Read and check one card."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise CatalogError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: a card must be a mapping of keys to values")
    names = [f.name for f in dataclasses.fields(SourceCard) if f.name != "file"]
    for key in data:
        if key not in names:
            raise CatalogError(f"{path}: unknown key {key!r}; known keys: {', '.join(names)}")
    for key in _REQUIRED:
        if not data.get(key):
            raise CatalogError(f"{path}: missing required key {key!r}")
    for key, value in data.items():
        if key in _LISTS:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            kind = "a list of strings"
        elif key in _BOOLS:
            ok, kind = isinstance(value, bool), "true or false"
        else:
            ok, kind = isinstance(value, str), "a string"
        if not ok:
            raise CatalogError(f"{path}: {key} must be {kind}, got {value!r}")
    if data["id"] != path.stem:
        raise CatalogError(f"{path}: id {data['id']!r} must match the file name ({path.stem!r})")
    if unknown := [code for code in data["languages"] if code not in LANGUAGES]:
        raise CatalogError(f"{path}: unknown language codes {unknown}; known: {', '.join(LANGUAGES)}")
    if data["redistribution"] not in REDISTRIBUTION:
        raise CatalogError(
            f"{path}: redistribution must be one of {', '.join(REDISTRIBUTION)}, got {data['redistribution']!r}"
        )
    if not (data.get("hf_id") or data.get("url") or data.get("verify")):
        raise CatalogError(f"{path}: give hf_id or url (or mark the card verify: true)")
    return SourceCard(**data, file=str(path))


def load_catalog(path: str | Path | None = None) -> list[SourceCard]:
    """All cards in ``path`` (a folder of ``*.yaml`` files; default :data:`CATALOG_DIR`), sorted by id."""
    folder = Path(path) if path is not None else CATALOG_DIR
    if not folder.is_dir():
        raise CatalogError(f"source catalogue not found: {folder} is not a folder")
    cards = [load_card(p) for p in sorted(folder.glob("*.yaml"))]
    return sorted(cards, key=lambda c: c.id)


def find_card(cards: list[SourceCard], card_id: str) -> SourceCard:
    """The card with this id, or a ``CatalogError`` listing the known ids."""
    for card in cards:
        if card.id == card_id:
            return card
    raise CatalogError(
        f"no source card {card_id!r} in the catalogue; known: {', '.join(c.id for c in cards)}"
    )


def cards_for(cards: list[SourceCard], language: str | None = None) -> list[SourceCard]:
    """The cards that have ``language`` (all cards for None)."""
    return [c for c in cards if language is None or language in c.languages]
