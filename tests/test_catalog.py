"""The source catalogue (corpora/sources/), `langkit corpus sources`, and the licence gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langkit.cli import main
from langkit.config import ConfigError, RunConfig, SourceConfig, config_from_dict
from langkit.corpus import build_corpus, run
from langkit.corpus.catalog import CatalogError, cards_for, load_card, load_catalog
from langkit.corpus.licences import (
    EvalSourceError,
    LicenceError,
    hf_license,
    redistribution_of,
    resolve_sources,
)
from langkit.languages import LANGUAGES
from langkit.rundir import RunDir

REQUIRED_IDS = {
    "flores-200", "flores-plus", "ntrex-128", "mafand-mt", "tico-19", "wikipedia", "cc-100", "fineweb-2",
    "glotcc", "madlad-400", "udhr", "mtbci", "common-voice",
}  # fmt: skip


def test_catalogue_loads_and_is_consistent() -> None:
    cards = load_catalog()
    ids = [c.id for c in cards]
    assert REQUIRED_IDS <= set(ids) and len(ids) == len(set(ids)) and ids == sorted(ids)
    for card in cards:
        assert card.languages and set(card.languages) <= set(LANGUAGES), card.id
        assert card.citation.strip() and (card.hf_id or card.url or card.verify), card.id
        # A licence that says what it allows must agree with the card's redistribution term.
        implied = redistribution_of(card.license)
        assert implied in ("", card.redistribution), (card.id, card.license, card.redistribution)
        if card.license in ("unknown",):
            assert card.redistribution == "no-redistribution" and card.verify, card.id
    by_id = {c.id: c for c in cards}
    assert by_id["mafand-mt"].redistribution == "non-commercial"
    assert by_id["flores-200"].eval_only and "bci_Latn" not in by_id["flores-200"].languages
    assert {c.id for c in cards_for(cards, "bci_Latn")} >= {"mtbci", "udhr"}
    assert all("bci_Latn" in c.languages for c in cards_for(cards, "bci_Latn"))


def write_card(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """id: demo
name: Demo
languages: [wol_Latn]
license: CC-BY-4.0
redistribution: open
citation: Nobody (2025).
url: https://example.org
"""


def test_card_validation_names_file_and_key(tmp_path: Path) -> None:
    assert load_card(write_card(tmp_path, "demo", GOOD)).redistribution == "open"
    cases = {
        "unknown key 'licence'": GOOD + "licence: MIT\n",
        "missing required key 'citation'": GOOD.replace("citation: Nobody (2025).\n", ""),
        "unknown language codes": GOOD.replace("[wol_Latn]", "[wo]"),
        "redistribution must be one of": GOOD.replace("redistribution: open", "redistribution: free"),
        "verify must be true or false": GOOD + "verify: maybe\n",
        "give hf_id or url": GOOD.replace("url: https://example.org\n", ""),
    }
    for message, text in cases.items():
        path = write_card(tmp_path / message.split()[0], "demo", text)
        with pytest.raises(CatalogError, match=message) as err:
            load_catalog(path.parent)
        assert str(path) in str(err.value)
    with pytest.raises(CatalogError, match="must match the file name"):
        load_card(write_card(tmp_path, "other", GOOD))


def test_cli_lists_sources_as_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "corpus", "sources", "--lang", "bci_Latn", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert cards and all("bci_Latn" in c["languages"] for c in cards)
    assert {"id", "hf_id", "license", "redistribution", "citation", "splits"} <= set(cards[0])
    assert main(["-q", "corpus", "sources"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:4] == ["id", "languages", "license", "redistribution"]
    assert "mafand-mt" in table and "masakhane/mafand" in table
    assert main(["-q", "corpus", "sources", "--lang", "xx_Latn"]) == 2


# --------------------------------------------------------------------------------------------------
# Licences and the gate
# --------------------------------------------------------------------------------------------------


def test_licence_ids() -> None:
    assert [redistribution_of(x) for x in ("CC0-1.0", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-NC-SA-4.0",
                                           "CC-BY-ND-4.0", "ODC-By-1.0", "unknown", "Apache-2.0")] == [
        "open", "open", "share-alike", "non-commercial", "no-redistribution", "open", "", "open",
    ]  # fmt: skip
    assert [hf_license(x) for x in ("CC-BY-SA-4.0", "ODC-By-1.0", "CC-BY-2.0-FR", "unknown", "other")] == [
        "cc-by-sa-4.0", "odc-by", "other", "unknown", "other",
    ]  # fmt: skip


def test_cards_fill_licences_and_config_wins(tmp_path: Path) -> None:
    sources = [
        SourceConfig("x", "text", "wol_Latn", card="mafand-mt"),
        SourceConfig("y", "text", "wol_Latn", card="tico-19", license="CC-BY-4.0", redistribution="open"),
        SourceConfig("z", "text", "wol_Latn", license="CC-BY-SA-4.0"),
    ]
    resolved = resolve_sources(sources)
    assert [(s.license, s.redistribution) for s in resolved] == [
        ("CC-BY-NC-4.0", "non-commercial"), ("CC-BY-4.0", "open"), ("CC-BY-SA-4.0", "share-alike"),
    ]  # fmt: skip
    assert sources[0].license == "unknown"  # the config objects are not changed
    with pytest.raises(ValueError, match="corpus source 'x'.*no source card 'nope'"):
        resolve_sources([SourceConfig("x", "text", "wol_Latn", card="nope")])


def test_release_refuses_a_non_commercial_source_unless_allowed(tmp_path: Path) -> None:
    free = tmp_path / "free.txt"
    free.write_text("Jamm rekk\n", encoding="utf-8")
    nc = tmp_path / "nc.txt"
    nc.write_text("Nanga def\n", encoding="utf-8")
    sources = [
        SourceConfig(str(free), "text", "wol_Latn", name="free", license="CC0-1.0"),
        SourceConfig(str(nc), "text", "wol_Latn", name="news", license="CC-BY-NC-4.0"),
    ]
    out = tmp_path / "out"
    with pytest.raises(LicenceError, match=r"'news' \(CC-BY-NC-4.0, non-commercial\)"):
        build_corpus(sources, ["wol_Latn"], out, 0, 0, 0)
    assert not out.exists()  # refused before anything was read or written
    stats = build_corpus(sources, ["wol_Latn"], out, 0, 0, 0, allow_restricted=True)
    assert [(s["name"], s["redistribution"], s["kept"]) for s in stats["sources"]] == [
        ("free", "open", 1), ("news", "non-commercial", 1),
    ]  # fmt: skip
    card = (out / "dataset" / "README.md").read_text(encoding="utf-8")
    assert "**Restricted:** news" in card and "| CC-BY-NC-4.0 | non-commercial | news |" in card
    # A private build (release: false) reads it without being asked; the run config carries both keys.
    cfg = RunConfig(languages=["wol_Latn"])
    cfg.corpus.sources = [SourceConfig(str(nc), "text", "wol_Latn", name="news", card="mafand-mt")]
    cfg.corpus.allow_empty = ["dev", "test"]  # one monolingual line: nothing to hold out
    with pytest.raises(LicenceError, match="mafand|CC-BY-NC"):
        run(cfg, RunDir(tmp_path / "run1"))
    cfg.corpus.release = False
    assert run(cfg, RunDir(tmp_path / "run2")).joinpath("stats.json").is_file()


def test_an_evaluation_set_is_refused_for_training_and_can_be_the_test_split(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    # A FLORES-200-like pair of aligned files (the catalogue marks flores-200 eval_only) and a training file
    # that happens to repeat one of its sentences.
    wol = tmp_path / "wol_Latn.devtest"
    fra = tmp_path / "fra_Latn.devtest"
    wol.write_text("".join(f"Benn waxtu {i} ci dëkk bi.\n" for i in range(5)), encoding="utf-8")
    fra.write_text("".join(f"Un moment {i} dans le village.\n" for i in range(5)), encoding="utf-8")
    train = tmp_path / "train.tsv"
    rows = [f"Jàng naa téere {i} bu bees.\tJ'ai lu le livre neuf {i}.\n" for i in range(6)]
    rows.append("Benn waxtu 3 ci dëkk bi.\tUn moment 3 dans le village.\n")
    train.write_text("wol\tfra\n" + "".join(rows), encoding="utf-8")
    flores = SourceConfig(str(wol), "aligned", "wol_Latn", name="flores", pivot_path=str(fra),
                          pivot_language="fra_Latn", card="flores-200")
    mine = SourceConfig(str(train), "tsv", "wol_Latn", name="mine", license="CC-BY-4.0", text_field="wol",
                        pivot_field="fra", pivot_language="fra_Latn")

    out = tmp_path / "refused"
    with pytest.raises(EvalSourceError, match=r"'flores' \(card flores-200.*split: test.*allow_eval_sources"):
        build_corpus([mine, flores], ["wol_Latn"], out, 2, 3, 0)
    assert not out.exists()  # refused before anything was read
    cfg = RunConfig(languages=["wol_Latn"])
    cfg.corpus.sources = [mine, flores]
    with pytest.raises(EvalSourceError):
        run(cfg, RunDir(tmp_path / "run"))

    # Declared the test split: all of it is the test split, none of it (nor its repeat) is trained on.
    flores.split = "test"
    stats = build_corpus([mine, flores], ["wol_Latn"], tmp_path / "test-only", 2, 3, 0)
    split = {name: pq.read_table(tmp_path / "test-only" / "dataset" / f"{name}.parquet").to_pylist()
             for name in ("train", "dev", "test")}
    assert sorted(r["text"] for r in split["test"]) == [f"Benn waxtu {i} ci dëkk bi." for i in range(5)]
    assert all(r["source"] == "mine" for r in split["train"] + split["dev"])
    assert len(split["dev"]) == 2 and len(split["train"]) == 4  # 6 of mine, minus 2 for dev, minus the repeat
    assert [(s["name"], s.get("split"), s["dropped"]["duplicate"]) for s in stats["sources"]] == [
        ("mine", None, 1), ("flores", "test", 0)]  # listed in config order; flores merged first

    # Said on purpose: split like any source.
    flores.split = ""
    stats = build_corpus([mine, flores], ["wol_Latn"], tmp_path / "allowed", 2, 3, 0, allow_eval_sources=True)
    trained_on = pq.read_table(tmp_path / "allowed" / "dataset" / "train.parquet").to_pylist()
    assert stats["splits"]["test"] == 3 and any(r["source"] == "flores" for r in trained_on)
    with pytest.raises(ConfigError, match=r"corpus.sources\[0\].split must be test, dev or empty"):
        config_from_dict({"languages": ["wol_Latn"], "corpus": {"sources": [
            {"path": "x.txt", "language": "wol_Latn", "split": "train"}]}})
