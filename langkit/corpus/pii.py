"""Personal data scrubbing: e-mail addresses, phone numbers, URLs carrying user data and ID-like
numbers are replaced by the typed placeholders ``<EMAIL>``, ``<PHONE>``, ``<URL>`` and ``<ID>``.

What is matched, and why:

* **E-mail**: ``local@domain.tld`` (ASCII local part; the top-level domain has two letters or more).
* **URL with user data**: an ``http(s)://``, ``ftp://`` or ``www.`` address with user info
  (``https://user:pw@host``), an e-mail address inside it, or a query/fragment parameter that
  identifies a person or a session (``user``, ``email``, ``token``, ``id``, ``uid``, ``session``,
  ``phone``, ``password``, ``fbclid``..., or a name ending in ``_id``/``token``). The **whole** URL
  becomes ``<URL>``: path segments of such URLs often carry the same identifiers, and a half-scrubbed
  URL is neither useful text nor safe. Other URLs (a Wikipedia link, a news site) are content and are
  kept, and the numbers inside them are not scrubbed.
* **Phone numbers**, written with spaces, dots or dashes between groups, or none:

  - international: ``+`` and a country code then 6 to 12 digits (E.164 allows 15 in all), optionally
    with ``(0)``; ``00`` or nothing instead of ``+`` only for the six countries below, whose numbers
    are then checked against the country's own format;
  - Senegal (+221): 9 digits, mobile ``7[05678]`` or fixed ``33``/``30``, written 2-3-2-2
    (``77 123 45 67``) or unbroken;
  - Côte d'Ivoire (+225): 10 digits since 2021 (``01``/``05``/``07`` mobile, ``21``/``25``/``27`` fixed),
    written in pairs (``07 07 12 34 56``) or unbroken; the older 8 digits in pairs (``07 12 34 56``);
  - DR Congo (+243): ``0`` + 9 digits, mobile ``08x``/``09x``: ``081 234 5678``, ``0812 345 678``;
  - Congo (+242): 9 digits with the leading ``0`` kept (``06 612 3456``, ``05 123 45 67``);
  - Kenya (+254) and Tanzania (+255): ``0`` + 9 digits, ``07xx``/``01xx`` (Kenya), ``06xx``/``07xx``
    (Tanzania): ``0712 345 678``, ``0754 123456``.

  Only these groupings match, so years (``1998``, ``2023-2024``), prices written with thousands
  separators (``750 000 000 FCFA``, ``1 500 000``), dates, times and verse references (``Yohane 3:16``)
  are left alone: a thousands grouping (1-3 digits, then groups of 3) is never one of the phone shapes
  except for 12 digits written 3-3-3-3 after a bare 254/255, which is taken as a phone number.
* **ID-like numbers**: a run of ``min_id_digits`` (9) or more digits not already taken as a phone
  number (national ID, account and card numbers), and card-like 4-4-4-4 groups.

Placeholders keep the sentence readable for training (``Woo ma ci <PHONE>``); the corpus stage records
which types a record had (``pii:phone`` in its ``normalization`` column) and counts them per language.
No sample of scrubbed text is kept anywhere (it would hold the personal data).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from langkit.config import PiiConfig

__all__ = ["PLACEHOLDERS", "PiiScrubber", "scrub_pii"]

PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "url": "<URL>", "id": "<ID>"}
"""PII type -> the placeholder that replaces it."""

_SEP = r"[ \u00a0\u202f.\-]"  # one separator between digit groups (NBSP: also before normalization)


def _groups(*shapes: str) -> str:
    """Alternatives of digit-group shapes such as ``"3-3-4"``, where the groups are separated by one
    separator, plus the unbroken form of each."""
    alternatives: set[str] = set()
    for shape in shapes:
        sizes = [int(n) for n in shape.split("-")]
        alternatives.add(_SEP.join(f"\\d{{{n}}}" for n in sizes))
        alternatives.add(f"\\d{{{sum(sizes)}}}")
    return "(?:" + "|".join(sorted(alternatives, key=len, reverse=True)) + ")"


# National significant numbers (what follows the country code), per country, as regular expressions
# over the digits after a fixed prefix. The first character class is the prefix; the groups follow.
_SN = rf"(?:7[05678]|3[03])(?:{_SEP}?\d{{7}}|{_SEP}\d{{3}}{_SEP}\d{{2}}{_SEP}\d{{2}})"
_CI = rf"(?:0[157]|2[157])(?:\d{{8}}|(?:{_SEP}\d{{2}}){{4}})"
_CD = rf"[89]\d(?:\d{{7}}|{_SEP}\d{{3}}{_SEP}\d{{4}}|\d{_SEP}\d{{3}}{_SEP}\d{{3}}|\d{_SEP}\d{{6}})"
_CG = rf"0[456](?:\d{{7}}|{_SEP}\d{{3}}{_SEP}\d{{4}}|{_SEP}\d{{3}}{_SEP}\d{{2}}{_SEP}\d{{2}}|{_SEP}\d{{7}})"
_KE = rf"[17]\d{{2}}(?:\d{{6}}|{_SEP}\d{{3}}{_SEP}\d{{3}}|{_SEP}\d{{6}})"
_TZ = rf"[67]\d{{2}}(?:\d{{6}}|{_SEP}\d{{3}}{_SEP}\d{{3}}|{_SEP}\d{{6}})"
_COUNTRY_NSN = {"221": _SN, "225": _CI, "243": _CD, "242": _CG, "254": _KE, "255": _TZ}

_NATIONAL = "|".join(
    [
        _SN,  # Senegal: no trunk prefix
        _CI,  # Côte d'Ivoire: the 0 is part of the number
        rf"0\d(?:{_SEP}\d{{2}}){{3}}",  # Côte d'Ivoire, the older 8 digits (only written in pairs)
        "0" + _CD,  # DR Congo
        _CG,  # Congo
        "0" + _KE,  # Kenya
        "0" + _TZ,  # Tanzania
    ]
)
_KNOWN_INTL = "|".join(
    rf"(?:\(?(?:\+|00){_SEP}?{cc}\)?|(?<![+\d]){cc}){_SEP}?(?:\(0\){_SEP}?)?{nsn}"
    for cc, nsn in _COUNTRY_NSN.items()
)
_OTHER_INTL = rf"\(?\+\d{{1,3}}\)?(?:{_SEP}?\(0\))?(?:{_SEP}?\d){{6,12}}"

_URL = r"(?:https?://|ftp://|www\.)[^\s<>\"'«»]+"
_EMAIL = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
_NOT_AFTER = r"(?<![\w@])"  # not inside a word or a number
_NOT_BEFORE = r"(?![\w@])(?![.,]\d)"  # nor followed by more of one (or its decimals)

_USER_KEYS = frozenset(
    """user username usr uid userid user_id u email e-mail mail token access_token id_token auth
    auth_token key api_key apikey session sessionid session_id sid id phone tel mobile msisdn
    password pass pwd login name first_name last_name fullname account fbclid gclid""".split()
)
_PARAM_RE = re.compile(r"[?&#;]([^=&#;?/]+)=")
_URL_TRAILING = ".,;:!?)]}"


def _url_has_user_data(url: str) -> bool:
    head = url.split("/", 3)
    if len(head) > 2 and "@" in head[2]:  # https://user:password@host
        return True
    if re.search(_EMAIL, url):
        return True
    for key in _PARAM_RE.findall(url):
        key = key.lower()
        if key in _USER_KEYS or key.endswith(("_id", "token", "email")):
            return True
    return False


def _compile(cfg: PiiConfig) -> re.Pattern[str]:
    parts = [f"(?P<url>{_URL})"]  # always matched, so that kept URLs keep their digits
    if cfg.emails:
        parts.append(f"(?P<email>{_NOT_AFTER}{_EMAIL})")
    if cfg.phones:
        parts.append(f"(?P<phone>(?<![\\w+@])(?:{_KNOWN_INTL}|{_OTHER_INTL}|{_NATIONAL}){_NOT_BEFORE})")
    if cfg.id_numbers:
        ids = rf"\d{{{cfg.min_id_digits},}}|\d{{4}}(?:[ \-]\d{{4}}){{3}}"
        parts.append(f"(?P<id>(?<!\\d[.,]){_NOT_AFTER}(?:{ids}){_NOT_BEFORE})")
    return re.compile("|".join(parts))


# Only texts with one of these can hold something to scrub (a cheap test before the big pattern).
_CANDIDATE_RE = re.compile(r"\d{5}|\d[ \u00a0\u202f.\-]\d|@|www\.|://")


@dataclass
class PiiScrubber:
    """Scrub personal data from texts, counting what was replaced by type (``counts``)."""

    cfg: PiiConfig = field(default_factory=PiiConfig)
    counts: Counter[str] = field(default_factory=Counter)
    """Placeholders written, by type (``email``, ``phone``, ``url``, ``id``)."""

    def __post_init__(self) -> None:
        self._pattern = _compile(self.cfg)

    def __call__(self, text: str) -> tuple[str, list[str]]:
        """The scrubbed text and the sorted PII types found in it (empty when nothing was found)."""
        if not self.cfg.enabled or not _CANDIDATE_RE.search(text):
            return text, []
        found: Counter[str] = Counter()

        def replace(m: re.Match[str]) -> str:
            kind = m.lastgroup or ""
            matched = m.group(0)
            if kind == "url":
                url = matched.rstrip(_URL_TRAILING)
                if not self.cfg.urls or not _url_has_user_data(url):
                    return matched
                found["url"] += 1
                return PLACEHOLDERS["url"] + matched[len(url) :]
            found[kind] += 1
            return PLACEHOLDERS[kind]

        out = self._pattern.sub(replace, text)
        self.counts.update(found)
        return out, sorted(found)


def scrub_pii(text: str, cfg: PiiConfig | None = None) -> tuple[str, list[str]]:
    """One-off :class:`PiiScrubber` call (build a scrubber once to scrub many texts)."""
    return PiiScrubber(cfg or PiiConfig())(text)
