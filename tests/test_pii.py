"""Personal data scrubbing: each phone format of the six countries, e-mails, URLs with user data, IDs;
and the numbers that must survive (years, prices, verses, dates)."""

from __future__ import annotations

import pytest

from langkit.config import ConfigError, PiiConfig, config_from_dict
from langkit.corpus.pii import PiiScrubber, scrub_pii

PHONES = [
    # Senegal (+221)
    "77 123 45 67",
    "771234567",
    "78-123-45-67",
    "33 821 00 00",
    "+221 77 123 45 67",
    "00221 76 123 45 67",
    "+221771234567",
    "221 77 123 45 67",
    # Côte d'Ivoire (+225)
    "07 07 12 34 56",
    "0707123456",
    "27 22 12 34 56",
    "05.05.12.34.56",
    "+225 07 07 12 34 56",
    "07 12 34 56",  # the older 8 digits
    # DR Congo (+243)
    "081 234 5678",
    "0812 345 678",
    "0991234567",
    "+243 81 234 5678",
    "+243 812 345 678",
    # Congo (+242)
    "06 612 3456",
    "05 123 45 67",
    "+242 06 612 34 56",
    # Kenya (+254)
    "0712 345 678",
    "0722-123-456",
    "0712345678",
    "+254 712 345 678",
    "(+254) 722 123 456",
    "254712345678",
    # Tanzania (+255)
    "0754 123 456",
    "0654 123456",
    "+255 754 123 456",
    # elsewhere (E.164 with +)
    "+33 6 12 34 56 78",
    "+44 (0)20 7946 0958",
    "+1 415-555-0123",
]


@pytest.mark.parametrize("phone", PHONES)
def test_each_phone_format_is_scrubbed(phone: str) -> None:
    assert scrub_pii(f"Woo ma ci {phone}, jërëjëf.") == ("Woo ma ci <PHONE>, jërëjëf.", ["phone"])


KEPT = [
    "Mu ngi juddu ci 1998.",
    "Ci atum 2023-2024 la.",
    "Njëg mi mooy 750 000 000 FCFA.",
    "1 500 000 F walla 15.000 F.",
    "Bei yake ni Ksh 1,200,000 au TSh 2.500.000.",
    "Yohane 3:16 na Matayo 5:3-12.",
    "Saa 9h30, tarehe 12/05/2023 au 12.05.2023.",
    "Pi ni 3.14159265358979.",
    "Watu 45 000 000 na 1 300 000 000.",
    "Article 25, alinéa 2; ISO 639-3.",
    "Namba 12345678 ni fupi.",  # 8 digits: not an ID
    "Voir https://fr.wikipedia.org/wiki/Dakar?oldid=123456789 pour plus.",  # a plain URL is content
]


@pytest.mark.parametrize("text", KEPT)
def test_years_prices_verses_dates_and_plain_urls_are_kept(text: str) -> None:
    assert scrub_pii(text) == (text, [])


def test_emails_are_scrubbed() -> None:
    assert scrub_pii("Bind ma ci awa.diop+corpus@example.sn walla A_B@mail.co.ke.") == (
        "Bind ma ci <EMAIL> walla <EMAIL>.",
        ["email"],
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/login?user=awa&lang=wo",
        "http://site.sn/page?Email=x",
        "https://api.example.org/v1?access_token=abc123",
        "https://example.com/a?session_id=9f8e",
        "www.example.com/profile?id=42",
        "https://awa:secret@example.com/files",
        "https://example.com/unsubscribe/awa@example.sn",
        "https://example.com/p#token=xyz",
    ],
)
def test_urls_with_user_data_are_scrubbed_whole(url: str) -> None:
    text, kinds = scrub_pii(f"Xoolal {url}. Jërëjëf")
    assert text == "Xoolal <URL>. Jërëjëf" and kinds == ["url"]


def test_id_like_numbers_are_scrubbed() -> None:
    assert scrub_pii("Kàrt bi: 1234567890123, kàrt banque 4111 1111 1111 1111.") == (
        "Kàrt bi: <ID>, kàrt banque <ID>.",
        ["id"],
    )


def test_counts_by_type_and_switches() -> None:
    scrubber = PiiScrubber()
    text = "Woo 77 123 45 67 walla 0712 345 678, bind a@b.sn, ID 123456789012."
    out, kinds = scrubber(text)
    assert out == "Woo <PHONE> walla <PHONE>, bind <EMAIL>, ID <ID>."
    assert kinds == ["email", "id", "phone"]
    assert scrubber.counts == {"phone": 2, "email": 1, "id": 1}
    scrubber("Nothing here.")
    assert scrubber.counts == {"phone": 2, "email": 1, "id": 1}

    assert scrub_pii(text, PiiConfig(enabled=False)) == (text, [])
    no_phones, kinds = scrub_pii(text, PiiConfig(phones=False))
    assert "77 123 45 67" in no_phones and "<EMAIL>" in no_phones and "phone" not in kinds
    assert scrub_pii("https://x.sn/?user=a", PiiConfig(urls=False)) == ("https://x.sn/?user=a", [])
    assert scrub_pii("ID 12345678901", PiiConfig(min_id_digits=12)) == ("ID 12345678901", [])


def test_pii_config_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"corpus\.pii\.min_id_digits"):
        config_from_dict({"corpus": {"pii": {"min_id_digits": 3}}})
