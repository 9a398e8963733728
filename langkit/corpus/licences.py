"""Licences of corpus sources: fill them from the catalogue, infer what they allow, and gate a release.

Every source ends up with a ``license`` and a ``redistribution`` term (``open``, ``share-alike``,
``non-commercial``, ``no-redistribution``, or empty when unknown): set in the config, else taken from
its catalogue card (``card:``), else inferred from the licence identifier. A corpus meant for a public
release (``corpus.release: true``, the default) refuses ``non-commercial`` and ``no-redistribution``
sources before anything is read, unless ``corpus.allow_restricted: true``. A source whose terms are
unknown is let through with a warning, and the dataset card says its licence is unknown.

The same gate refuses to train on a benchmark: a source whose card marks it as an evaluation set
(``eval_only``) must be declared ``split: test`` (or ``dev``) unless ``corpus.allow_eval_sources: true``.
"""

from __future__ import annotations

import dataclasses
import re

from langkit.config import SourceConfig
from langkit.corpus.catalog import REDISTRIBUTION, SourceCard, find_card, load_catalog
from langkit.corpus.readers import source_name
from langkit.utils import get_logger

log = get_logger("corpus.licences")

RESTRICTED = ("non-commercial", "no-redistribution")
"""Redistribution terms a public release refuses."""
UNKNOWN = ("", "unknown", "other", "noassertion", "proprietary")
"""Licence values that say nothing about what is allowed."""
_OPEN = re.compile(
    r"^(cc0|cc-by-\d|cc-by-\d\.\d|pddl|odc-by|public-domain|unlicense|mit|apache|bsd|isc|zlib|"
    r"cdla-permissive|ofl)"
)
_SHARE_ALIKE = re.compile(r"^(cc-by-sa|odbl|gpl|agpl|lgpl|gfdl|cdla-sharing|mpl|epl|eupl)")

HF_LICENSES = {
    "apache-2.0", "mit", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0",
    "epl-2.0", "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0",
    "lgpl", "lgpl-2.1", "lgpl-3.0", "isc", "mpl-2.0", "odc-by", "odbl", "pddl", "ofl-1.1", "unlicense",
    "zlib", "unknown", "other",
}  # fmt: skip
"""Licence ids the Hugging Face Hub's ``license:`` metadata accepts (the ones corpora use)."""


def hf_license(license: str) -> str:
    """The Hub's id for an SPDX licence (``CC-BY-SA-4.0`` -> ``cc-by-sa-4.0``, ``ODC-By-1.0`` ->
    ``odc-by``); ``other`` when the Hub has none, ``unknown`` when the licence is unknown."""
    spdx = license.strip().lower()
    if spdx in UNKNOWN:
        return "unknown" if spdx in ("", "unknown") else "other"
    spdx = {"odc-by-1.0": "odc-by", "odbl-1.0": "odbl", "pddl-1.0": "pddl", "gfdl-1.3": "gfdl"}.get(
        spdx, spdx
    )
    return spdx if spdx in HF_LICENSES else "other"


def redistribution_of(license: str) -> str:
    """What an SPDX-style licence allows, or ``""`` when the identifier does not say."""
    spdx = license.strip().lower()
    if spdx in UNKNOWN:
        return ""
    if "-nc" in spdx or "noncommercial" in spdx:
        return "non-commercial"
    if "-nd" in spdx:  # no derivatives: a filtered, normalized corpus is a derivative
        return "no-redistribution"
    if _SHARE_ALIKE.match(spdx):
        return "share-alike"
    if _OPEN.match(spdx):
        return "open"
    return ""


def resolve_sources(sources: list[SourceConfig], cards: list[SourceCard] | None = None) -> list[SourceConfig]:
    """Copies of ``sources`` with ``license`` and ``redistribution`` filled in: from the config, else
    from the source's card, else inferred from the licence. A card id not in the catalogue is an
    error naming the source."""
    resolved = []
    for source in sources:
        license, redistribution = source.license, source.redistribution
        if source.card:
            if cards is None:
                cards = load_catalog()
            try:
                card = find_card(cards, source.card)
            except ValueError as err:
                raise ValueError(f"corpus source {source_name(source)!r}: {err}") from None
            if license in UNKNOWN:
                license = card.license
            elif license != card.license:
                log.warning(
                    "%s: licence %s in the config differs from its card %s (%s); using the config's",
                    source_name(source), license, card.id, card.license,
                )  # fmt: skip
            if not redistribution:
                redistribution = card.redistribution
        if not redistribution:
            redistribution = redistribution_of(license)
        assert redistribution in ("", *REDISTRIBUTION)
        resolved.append(dataclasses.replace(source, license=license, redistribution=redistribution))
    return resolved


class LicenceError(ValueError):
    """A source's licence does not allow what the build is meant for."""


def check_release(sources: list[SourceConfig], release: bool, allow_restricted: bool) -> None:
    """Refuse restricted sources in a corpus meant for release (call on resolved sources)."""
    restricted = [s for s in sources if s.redistribution in RESTRICTED]
    for source in sources:
        if not source.redistribution:
            log.warning(
                "%s: licence %r does not say whether it may be redistributed; set `redistribution` "
                "or `card` in its config (the dataset card will say it is unknown)",
                source_name(source), source.license,
            )  # fmt: skip
    if not restricted or not release:
        return
    listing = "; ".join(f"{source_name(s)!r} ({s.license}, {s.redistribution})" for s in restricted)
    if allow_restricted:
        log.warning("corpus.allow_restricted: reading restricted sources for a release: %s", listing)
        return
    raise LicenceError(
        f"corpus.release is true but these sources may not be redistributed freely: {listing}. Remove "
        "them, set corpus.release: false for a private corpus, or corpus.allow_restricted: true if you "
        "have permission (nothing was read)"
    )


class EvalSourceError(ValueError):
    """A source whose catalogue card marks it as an evaluation set would be trained on."""


def check_eval_sources(sources: list[SourceConfig], allow_eval_sources: bool,
                       cards: list[SourceCard] | None = None) -> None:
    """Refuse sources whose card marks them as an evaluation set (``eval_only``) unless they are declared
    held-out (``split: test`` or ``dev``) or ``allow_eval_sources`` says to split them like any other."""
    flagged = []
    for source in sources:
        if not source.card or source.split:
            continue
        if cards is None:
            cards = load_catalog()
        card = find_card(cards, source.card)
        if card.eval_only:
            flagged.append((source, card))
    if not flagged:
        return
    listing = "; ".join(f"{source_name(s)!r} (card {c.id}: {c.name})" for s, c in flagged)
    if allow_eval_sources:
        log.warning("corpus.allow_eval_sources: evaluation sets split into train like any source: %s", listing)
        return
    raise EvalSourceError(
        f"these corpus sources are evaluation sets by their catalogue card, never to be trained on: {listing}. "
        "Declare each one `split: test` (all its records go to the test split; `split: dev` for the dev "
        "split), or set corpus.allow_eval_sources: true to split it into train/dev/test like any source "
        "(nothing was read)"
    )
