"""The corpus stage: readers, normalization, drop and quarantine accounting, splits, parquet output."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import json
import logging
import re
import unicodedata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from langkit.cli import main
from langkit.config import ConfigError, RunConfig, SourceConfig, config_from_dict, save_config
from langkit.corpus import COLUMNS, Record, build_corpus, read_source, run
from langkit.corpus.build import DROP_REASONS, EmptySplitError
from langkit.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
E_ACUTE_NFD = "e\u0301"  # "é" as e + combining acute accent


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def drops(**counts: int) -> dict[str, int]:
    """A per-source/per-language ``dropped`` dict: every fixed reason is counted, 0 when unused."""
    return {**dict.fromkeys(DROP_REASONS, 0), **counts}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def tsv_source(path: Path, **kw: Any) -> SourceConfig:
    base: dict[str, Any] = dict(
        path=str(path), format="tsv", language="wol_Latn", name="wol-t", license="CC-BY-4.0",
        text_field="wol_Latn", pivot_field="fra_Latn", pivot_language="fra_Latn",
    )  # fmt: skip
    return SourceConfig(**{**base, **kw})


def pairs_tsv(path: Path, n: int, prefix: str = "wol") -> Path:
    rows = "".join(f"{i}\t{prefix} text {i}\ttexte {i}\n" for i in range(1, n + 1))
    return write(path, "id\twol_Latn\tfra_Latn\n" + rows)


# --------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------


def test_text_reader_handles_bom_crlf_and_quarantines_bad_bytes(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.txt", b"\xef\xbb\xbfNanga def?\r\n\nJ\xebr\xebj\xebf\nBa \xc3\xabll\xc3\xabg\n"
    )
    records = list(read_source(SourceConfig(path=str(path), format="text", language="wol_Latn")))
    assert [(r.text, r.line, bool(r.error)) for r in records] == [
        ("Nanga def?", 1, False),  # BOM and CRLF gone
        ("", 2, False),  # blank: for the builder to drop as empty, not malformed
        ("", 3, True),  # latin-1 bytes: not UTF-8
        ("Ba ëllëg", 4, False),
    ]
    assert "UTF-8" in records[2].error and "r" in records[2].raw


def test_jsonl_reader_yields_pairs_and_flags_malformed_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": 1, "bci": "Akwaba", "fr": "Bienvenue", "extra": 3}),
        "{not json",
        json.dumps({"bci": "Ɔ ti kpa"}),  # no pivot
        json.dumps(["a", "list"]),
        json.dumps({"bci": 7, "fr": "sept"}),
        "",
        json.dumps({"bci": "Mo", "fr": "Merci"}, ensure_ascii=False),
    ]
    path = write(tmp_path / "b.jsonl", "\n".join(lines) + "\n")
    src = SourceConfig(
        str(path), "jsonl", "bci_Latn", text_field="bci", pivot_field="fr", pivot_language="fra_Latn"
    )
    records = list(read_source(src))
    assert [r.line for r in records] == [1, 2, 3, 4, 5, 6, 7]
    assert (records[0].text, records[0].pivot_text, records[0].error) == ("Akwaba", "Bienvenue", "")
    assert records[1].error.startswith("bad JSON") and records[1].raw == "{not json"
    assert records[2].error == "missing field 'fr'"
    assert records[3].error == "not a JSON object"
    assert "not a string" in records[4].error
    assert (records[5].text, records[5].error) == ("", "")
    assert (records[6].text, records[6].pivot_text) == ("Mo", "Merci")


def test_tsv_reader_ignores_extra_columns_and_flags_wrong_column_count(tmp_path: Path) -> None:
    path = write(
        tmp_path / "w.tsv",
        "id\tnote\tfra_Latn\twol_Latn\r\n"  # CRLF header: the last column name must not keep the \r
        "1\tx\tBonjour\tSalaam aleekum\r\n"
        "2\tonly three\tcolumns\n"
        "3\t\tMerci\tJërëjëf\n",
    )
    records = list(read_source(tsv_source(path)))
    assert [(r.text, r.pivot_text, r.line, r.error) for r in records] == [
        ("Salaam aleekum", "Bonjour", 2, ""),
        ("", "", 3, "expected 4 tab-separated columns, got 3"),
        ("Jërëjëf", "Merci", 4, ""),
    ]
    assert records[1].raw == "2\tonly three\tcolumns"


def test_tsv_missing_column_is_a_config_error_naming_column_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "w.tsv", "id\twol_Latn\tfrench\n1\ta\tb\n")
    with pytest.raises(ValueError, match=r"column 'fra_Latn'.*") as err:
        list(read_source(tsv_source(path)))
    assert str(path) in str(err.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file not found.*nope.tsv"):
        read_source(tsv_source(tmp_path / "nope.tsv"))


def test_parquet_reader_streams_rows_and_flags_nulls(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    rows = [
        {"sw": "Habari", "en": "Hello", "x": 1},
        {"sw": None, "en": "Bye", "x": 2},
        {"sw": "Asante", "en": "Thanks", "x": 3},
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    src = SourceConfig(
        str(path), "parquet", "swh_Latn", text_field="sw", pivot_field="en", pivot_language="eng_Latn"
    )
    records = list(read_source(src))
    assert [(r.text, r.pivot_text, r.line) for r in records] == [
        ("Habari", "Hello", 1),
        ("", "", 2),
        ("Asante", "Thanks", 3),
    ]
    assert "not a string" in records[1].error
    with pytest.raises(ValueError, match="column 'swh'.*p.parquet|p.parquet.*column 'swh'"):
        list(read_source(SourceConfig(str(path), "parquet", "swh_Latn", text_field="swh")))


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep datasets' cache (and its lock files) inside the test's tmp_path."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    return tmp_path / "hf_cache"


@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_hf_reader_reads_a_local_dataset_folder(tmp_path: Path, kind: str, hf_cache: Path) -> None:
    folder = tmp_path / "my_dataset"
    (folder / "data").mkdir(parents=True)
    rows = [
        {"translation_sw": "Karibu", "translation_en": "Welcome"},
        {"translation_sw": "Kwaheri", "translation_en": "Goodbye"},
    ]
    if kind == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "train-00000-of-00001.parquet")
    else:
        write(folder / "data" / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    src = SourceConfig(
        str(folder), "hf", "swh_Latn", text_field="translation_sw",
        pivot_field="translation_en", pivot_language="eng_Latn", hf_split="train",
    )  # fmt: skip
    records = list(read_source(src))
    assert [(r.text, r.pivot_text, r.line, r.error) for r in records] == [
        ("Karibu", "Welcome", 1, ""),
        ("Kwaheri", "Goodbye", 2, ""),
    ]


# --------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def messy(tmp_path: Path) -> tuple[list[SourceConfig], Path]:
    """Three small sources with every kind of mess, and one source of a language the run skips."""
    d = tmp_path / "src"
    d.mkdir()
    tsv = write(
        d / "wol.tsv",
        "id\twol_Latn\tfra_Latn\n"
        f"1\tCaf{E_ACUTE_NFD} bi\tLe caf{E_ACUTE_NFD}\n"  # line 2: decomposed é on both sides
        "2\t  Nanga def?  \tComment vas-tu ?\n"  # line 3
        "3\t   \tvide\n"  # line 4: empty after strip
        "4\tNanga def?\tComment vas-tu ?\n"  # line 5: duplicate of line 3 after strip
        "5\tbroken row\n"  # line 6: wrong column count
        "6\tJërëjëf\tMerci\n"  # line 7
        "7\tNanga def?\tÇa va ?\n",  # line 8: same text, other pivot: not a duplicate
    )
    jsonl = write(
        d / "wol.jsonl",
        json.dumps({"w": "Ba ëllëg", "f": "À demain"})
        + "\n{bad json\n"
        + json.dumps({"w": "Jàmm rekk"})
        + "\n",
    )
    text = write(d / "wol.txt", b"Jamm rekk\n\nNdox\n\xff\xfe broken\nJamm rekk\n")
    other = write(d / "swh.txt", "Habari\n")
    sources = [
        tsv_source(tsv, name="wol-tsv"),
        SourceConfig(
            str(jsonl),
            "jsonl",
            "wol_Latn",
            name="wol-jsonl",
            text_field="w",
            pivot_field="f",
            pivot_language="fra_Latn",
        ),
        SourceConfig(str(text), "text", "wol_Latn", name="wol-text"),
        SourceConfig(str(other), "text", "swh_Latn", name="swh-text"),
    ]
    return sources, tmp_path / "corpus"


def test_build_normalizes_drops_and_quarantines_with_exact_accounting(
    messy: tuple[list[SourceConfig], Path],
) -> None:
    sources, out = messy
    stats = build_corpus(sources, ["wol_Latn"], out, dev_size=0, test_size=0, seed=0)

    by_name = {s["name"]: s for s in stats["sources"]}
    assert list(by_name) == ["wol-tsv", "wol-jsonl", "wol-text"]  # swh source skipped
    assert by_name["wol-tsv"] == {
        "name": "wol-tsv", "path": sources[0].path, "format": "tsv", "encoding": "UTF-8", "language": "wol_Latn",
        "pivot_language": "fra_Latn", "license": "CC-BY-4.0", "redistribution": "open", "card": "",
        "read": 7, "kept": 4, "dropped": drops(empty=1, duplicate=1), "quarantined": 1,
    }  # fmt: skip
    assert (
        by_name["wol-jsonl"]["read"],
        by_name["wol-jsonl"]["kept"],
        by_name["wol-jsonl"]["quarantined"],
    ) == (3, 1, 2)
    assert by_name["wol-text"]["dropped"] == drops(empty=1, duplicate=1)
    for s in stats["sources"]:
        assert s["read"] == s["kept"] + sum(s["dropped"].values()) + s["quarantined"]
    lang = stats["languages"]["wol_Latn"]
    assert (lang["read"], lang["kept"], lang["quarantined"], lang["pairs"], lang["monolingual"]) == (
        15,
        7,
        4,
        5,
        2,
    )
    assert lang["dropped"] == drops(empty=2, duplicate=2)
    assert json.loads((out / "stats.json").read_text(encoding="utf-8")) == stats

    train = pq.read_table(out / "dataset" / "train.parquet").to_pylist()
    texts = [r["text"] for r in train]
    assert texts == ["Café bi", "Nanga def?", "Jërëjëf", "Nanga def?", "Ba ëllëg", "Jamm rekk", "Ndox"]
    cafe = train[0]
    assert (
        cafe["text"] == unicodedata.normalize("NFC", cafe["text"])
        and "\u0301" not in cafe["text"] + cafe["pivot_text"]
    )
    assert cafe == {
        "id": "wol-tsv:2", "language": "wol_Latn", "text": "Café bi", "pivot_language": "fra_Latn",
        "pivot_text": "Le café", "source": "wol-tsv", "license": "CC-BY-4.0", "file": sources[0].path, "line": 2,
        "normalization": ["nfc", "pivot:nfc"],  # decomposed é on both sides
    }  # fmt: skip
    assert train[-1]["pivot_language"] == "" and train[-1]["pivot_text"] == ""

    dropped = read_jsonl(out / "dropped.jsonl")
    assert [(d["source"], d["line"], d["reason"]) for d in dropped] == [
        ("wol-tsv", 4, "empty"), ("wol-tsv", 5, "duplicate"), ("wol-text", 2, "empty"), ("wol-text", 5, "duplicate"),
    ]  # fmt: skip
    assert dropped[1]["text"] == "Nanga def?" and dropped[1]["file"] == sources[0].path

    quarantined = read_jsonl(out / "quarantine.jsonl")
    assert [(q["file"], q["line"]) for q in quarantined] == [
        (sources[0].path, 6), (sources[1].path, 2), (sources[1].path, 3), (sources[2].path, 4),
    ]  # fmt: skip
    reasons = [q["reason"] for q in quarantined]
    assert (
        "column" in reasons[0]
        and reasons[1].startswith("bad JSON")
        and "'f'" in reasons[2]
        and "UTF-8" in reasons[3]
    )
    assert quarantined[0]["raw"] == "5\tbroken row"


def test_build_normalizes_scrubs_filters_and_identifies_language(tmp_path: Path) -> None:
    """Every record normalized by its language's rules (the pivot by French rules), personal data
    scrubbed on both sides, each filter's reason, a French line dropped from a Wolof source, the
    rules recorded per record and counted per language with before/after samples."""
    wol = write(
        tmp_path / "wol.tsv",
        "id\twol_Latn\tfra_Latn\n"
        "1\tNanga def?\tComment vas-tu\u00a0?\n"  # line 2: NBSP in the French pivot
        "2\tWoo ma ci 77 123 45 67 ngir jàng.\tAppelle-moi au 77 123 45 67.\n"  # line 3: a phone number
        "3\tLes enfants vont à l\u2019école tous les jours.\tLes enfants vont à l'école.\n"  # line 4: French
        "4\t12 345 678 90\t12 345 678 90\n"  # line 5: figures
        "5\tjàmm jàmm jàmm jàmm jàmm\tpaix\n"  # line 6: one word repeated
        "6\tSama \u03b7aam dafay metti\tMa mâchoire me fait mal.\n"  # line 7: Greek eta for ŋ
        "7\t.\t.\n"  # line 8: a lone full stop
        "8\tDafa dem ci marché bi, gnu ngi fi.\tIl est allé au marché.\n",  # line 9: French-style spelling
    )
    bci = write(tmp_path / "bci.txt", "K\u03b5 \u2184 ti kpa'n, be k\u2184 awlo.\n")
    sources = [tsv_source(wol, name="wol"), SourceConfig(str(bci), "text", "bci_Latn", name="bci")]
    out = tmp_path / "corpus"
    stats = build_corpus(sources, ["wol_Latn", "bci_Latn"], out, dev_size=0, test_size=0, seed=0)

    dropped = read_jsonl(out / "dropped.jsonl")
    assert [(d["line"], d["reason"]) for d in dropped] == [
        (4, "langid:fra_Latn"), (5, "mostly_symbols"), (6, "repeated_ngrams"), (8, "too_short"),
    ]  # fmt: skip
    # Normalized before it was judged (and "jours" has the French "ou" a Wolof text would not have).
    assert dropped[0]["normalization"] == ["apostrophe", "flag:french_spelling"]
    source = stats["sources"][0]
    assert source["dropped"] == drops(
        **{"mostly_symbols": 1, "repeated_ngrams": 1, "too_short": 1, "langid:fra_Latn": 1}
    )
    for s in stats["sources"]:
        assert s["read"] == s["kept"] + sum(s["dropped"].values()) + s["quarantined"]
    assert stats["languages"]["wol_Latn"]["dropped"]["langid:fra_Latn"] == 1

    rows = {r["line"]: r for r in pq.read_table(out / "dataset" / "train.parquet").to_pylist()}
    assert {line: rows[line]["normalization"] for line in rows if rows[line]["language"] == "wol_Latn"} == {
        2: ["pivot:space"],
        3: ["pii:phone", "pivot:pii:phone"],
        7: ["lookalike"],
        9: ["flag:french_spelling"],
    }
    assert (rows[2]["pivot_text"], rows[3]["text"], rows[3]["pivot_text"], rows[7]["text"]) == (
        "Comment vas-tu ?", "Woo ma ci <PHONE> ngir jàng.", "Appelle-moi au <PHONE>.", "Sama ŋaam dafay metti",
    )  # fmt: skip
    assert rows[1]["text"] == "Kɛ ɔ ti kpa'n, be kɔ awlo." and rows[1]["normalization"] == ["lookalike"]

    lang = stats["languages"]["wol_Latn"]
    assert lang["pii"] == {"email": 0, "phone": 2, "url": 0, "id": 0}
    assert lang["normalization"]["rules"] == {"apostrophe": 1, "lookalike": 1, "flag:french_spelling": 2}
    assert lang["normalization"]["samples"]["lookalike"] == [
        {"before": "Sama \u03b7aam dafay metti", "after": "Sama ŋaam dafay metti"}
    ]
    assert lang["normalization"]["lookalikes"] == {"η→ŋ": 1}
    assert lang["pivot_normalization"]["fra_Latn"]["rules"] == {"space": 1}
    assert lang["pivot_normalization"]["fra_Latn"]["samples"]["space"] == [
        {"before": "Comment vas-tu\u00a0?", "after": "Comment vas-tu ?"}
    ]
    assert stats["languages"]["bci_Latn"]["normalization"]["lookalikes"] == {"ε→ɛ": 1, "ↄ→ɔ": 2}
    assert stats["steps"]["langid"]["backend"] == "builtin" and stats["steps"]["normalize"]["nfc"] is True
    # The phone number is nowhere in the output, not even in the samples of the report.
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in {".json", ".jsonl", ".parquet", ".md"}:
            assert b"77 123 45 67" not in path.read_bytes(), path


def test_build_steps_follow_the_config(tmp_path: Path) -> None:
    wol = write(
        tmp_path / "wol.tsv",
        "id\twol_Latn\tfra_Latn\n"
        "1\tLes enfants vont à l'école tous les jours.\tLes enfants.\n"
        "2\tWoo ma ci 77 123 45 67.\tAppelle-moi.\n",
    )
    cfg = config_from_dict(
        {
            "languages": ["wol_Latn"],
            "corpus": {
                "dev_size": 0,
                "test_size": 0,
                "allow_empty": ["train"],  # both lines are dropped
                "langid": {"enabled": False},
                "pii": {"enabled": False},
                "filters": {"min_chars": 100},
                "normalize": {"unify_apostrophes": False},
            },
        }
    )
    cfg.corpus.sources = [tsv_source(wol)]
    run_dir = RunDir(tmp_path / "run")
    run(cfg, run_dir)
    dropped = read_jsonl(run_dir.corpus / "dropped.jsonl")
    assert [(d["line"], d["reason"], d["text"]) for d in dropped] == [
        (2, "too_short", "Les enfants vont à l'école tous les jours."),
        (3, "too_short", "Woo ma ci 77 123 45 67."),
    ]


def test_splits_are_disjoint_sized_pair_only_and_seeded(tmp_path: Path) -> None:
    wol = pairs_tsv(tmp_path / "wol.tsv", 20)
    mono = write(tmp_path / "wol.txt", "".join(f"mono {i}\n" for i in range(8)))
    sources = [tsv_source(wol), SourceConfig(str(mono), "text", "wol_Latn", name="wol-mono")]

    def splits(seed: int, out: str) -> dict[str, list[dict[str, Any]]]:
        build_corpus(sources, ["wol_Latn"], tmp_path / out, dev_size=3, test_size=5, seed=seed)
        return {
            s: pq.read_table(tmp_path / out / "dataset" / f"{s}.parquet").to_pylist()
            for s in ("train", "dev", "test")
        }

    a = splits(0, "a")
    ids = {name: {r["id"] for r in rows} for name, rows in a.items()}
    assert (len(ids["test"]), len(ids["dev"]), len(ids["train"])) == (5, 3, 20 + 8 - 8)
    assert (
        not (ids["test"] & ids["dev"])
        and not (ids["test"] & ids["train"])
        and not (ids["dev"] & ids["train"])
    )
    assert all(r["pivot_text"] for r in a["test"] + a["dev"])
    assert sum(1 for r in a["train"] if not r["pivot_text"]) == 8
    assert splits(0, "b") == a  # same seed, same split
    assert {r["id"] for r in splits(1, "c")["test"]} != ids["test"]


def test_too_few_pairs_warns_and_fills_test_first(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sources = [tsv_source(pairs_tsv(tmp_path / "wol.tsv", 7))]
    with caplog.at_level(logging.WARNING, logger="langkit"):
        stats = build_corpus(
            sources, ["wol_Latn", "lin_Latn"], tmp_path / "out", dev_size=4, test_size=6, seed=0,
            allow_empty=["train"],
        )
    assert stats["languages"]["wol_Latn"]["splits"] == {"train": 0, "dev": 1, "test": 6}
    assert stats["languages"]["lin_Latn"]["splits"] == {"train": 0, "dev": 0, "test": 0}
    assert stats["splits"] == {"train": 0, "dev": 1, "test": 6}
    assert any("wol_Latn: only 7 aligned pairs" in r.message for r in caplog.records)
    assert any("lin_Latn: no text kept" in r.message for r in caplog.records)


def test_a_split_left_empty_fails_the_build_with_the_counts(tmp_path: Path) -> None:
    # 10 pairs, 2 of them malformed (quarantined): the 8 left all go to dev and test, train gets nothing.
    wol = pairs_tsv(tmp_path / "wol.tsv", 8)
    write(wol, wol.read_text(encoding="utf-8") + "9\tno pivot column\n10\n")
    sources = [tsv_source(wol)]
    out = tmp_path / "out"
    with pytest.raises(EmptySplitError) as err:
        build_corpus(sources, ["wol_Latn"], out, dev_size=2, test_size=6, seed=0)
    message = str(err.value)
    assert "the train split is empty (splits: train 0, dev 2, test 6)" in message
    assert "wol_Latn: read 10, kept 8 (8 aligned pairs), dropped 0 (none), quarantined 2" in message
    assert "corpus.allow_empty: [train]" in message
    # The counts are on disk for a look; the splits are not, so no later stage takes them for a dataset.
    assert json.loads((out / "stats.json").read_text(encoding="utf-8"))["splits"] == {"train": 0, "dev": 2, "test": 6}
    assert len(read_jsonl(out / "quarantine.jsonl")) == 2
    assert not list((out / "dataset").glob("*.parquet"))

    # Asked for: the same build goes through.
    stats = build_corpus(sources, ["wol_Latn"], out, dev_size=2, test_size=6, seed=0, allow_empty=["train"])
    assert stats["splits"] == {"train": 0, "dev": 2, "test": 6}

    # Monolingual text only: no pair to hold out, so dev and test stay empty; fine when their sizes are 0.
    mono = [SourceConfig(str(write(tmp_path / "wol.txt", "Nanga def\nMaa ngi fi\n")), "text", "wol_Latn")]
    with pytest.raises(EmptySplitError, match=r"the dev and test splits are empty \(splits: train 2, dev 0, test 0\)"):
        build_corpus(mono, ["wol_Latn"], tmp_path / "mono", dev_size=1, test_size=1, seed=0)
    assert build_corpus(mono, ["wol_Latn"], tmp_path / "mono", 0, 0, 0)["splits"] == {"train": 2, "dev": 0, "test": 0}

    # From the command line: the config key, and a failing exit status with the counts.
    cfg = RunConfig(languages=["wol_Latn"])
    cfg.corpus.sources, cfg.corpus.dev_size, cfg.corpus.test_size = sources, 2, 6
    config = tmp_path / "run.yaml"
    save_config(cfg, config)
    assert main(["-q", "corpus", "build", str(config), "--out", str(tmp_path / "run")]) == 2
    assert main(["-q", "corpus", "build", str(config), "--out", str(tmp_path / "run"), "corpus.allow_empty=[train]"]) == 0
    with pytest.raises(ConfigError, match="corpus.allow_empty: unknown split"):
        config_from_dict({"corpus": {"allow_empty": ["validation"]}})


def test_parquet_output_loads_with_datasets_with_exact_columns(tmp_path: Path, hf_cache: Path) -> None:
    import datasets

    sources = [tsv_source(pairs_tsv(tmp_path / "wol.tsv", 12))]
    out = tmp_path / "corpus"
    build_corpus(sources, ["wol_Latn"], out, dev_size=2, test_size=3, seed=0)
    files = {s: str(out / "dataset" / f"{s}.parquet") for s in ("train", "dev", "test")}
    ds = datasets.load_dataset("parquet", data_files=files)
    assert {s: ds[s].num_rows for s in ds} == {"train": 7, "dev": 2, "test": 3}
    for split in ds.values():
        assert split.column_names == list(COLUMNS)
        features = dict(split.features)
        assert features.pop("normalization") == datasets.List(datasets.Value("string"))
        assert {k: v.dtype for k, v in features.items()} == {
            c: "int64" if c == "line" else "string" for c in COLUMNS if c != "normalization"
        }
    assert ds["test"][0]["id"].startswith("wol-t:")

    # An empty split keeps the schema (and has no row group, so datasets can stream it).
    build_corpus(sources, ["wol_Latn"], out, dev_size=0, test_size=0, seed=0)
    empty = pq.read_table(files["dev"])
    assert empty.num_rows == 0 and empty.column_names == list(COLUMNS)
    streamed = datasets.load_dataset("parquet", data_files={"dev": files["dev"]}, streaming=True)
    assert list(streamed["dev"]) == []
    assert not list(out.rglob("*.tmp"))


def test_duplicate_source_names_are_an_error(tmp_path: Path) -> None:
    path = pairs_tsv(tmp_path / "wol.tsv", 2)
    with pytest.raises(ValueError, match="share a name.*wol-t"):
        build_corpus([tsv_source(path), tsv_source(path)], ["wol_Latn"], tmp_path / "out", 0, 0, 0)


def test_run_is_the_stage_front_door(tmp_path: Path) -> None:
    cfg = RunConfig(languages=["wol_Latn"])
    cfg.corpus.sources = [tsv_source(pairs_tsv(tmp_path / "wol.tsv", 12))]
    run_dir = RunDir(tmp_path / "run")
    assert run(cfg, run_dir) == run_dir.corpus
    for split in ("train", "dev", "test"):
        assert run_dir.split(split).is_file()
    assert sorted(p.name for p in run_dir.corpus.iterdir()) == [
        "dataset",
        "dropped.jsonl",
        "quarantine.jsonl",
        "stats.json",
    ]
    stats = json.loads((run_dir.corpus / "stats.json").read_text(encoding="utf-8"))
    assert stats["splits"] == {"train": 2, "dev": 4, "test": 6}


def test_record_is_a_small_dataclass() -> None:
    assert Record("a") == Record(text="a", pivot_text="", line=0, error="", raw="")


# --------------------------------------------------------------------------------------------------
# The demo corpus, read with the config snippet its README documents
# --------------------------------------------------------------------------------------------------


def test_demo_corpus_builds_with_documented_counts(tmp_path: Path) -> None:
    readme = (REPO / "corpora" / "demo" / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"```yaml\n(.*?)```", readme, re.S)
    assert snippet
    cfg = config_from_dict(yaml.safe_load(snippet.group(1)))
    for source in cfg.corpus.sources:  # as load_config does for a config in configs/
        source.path = str((REPO / "configs" / source.path).resolve())
    run_dir = RunDir(tmp_path / "run")
    run(cfg, run_dir)
    stats = json.loads((run_dir.corpus / "stats.json").read_text(encoding="utf-8"))
    assert stats["splits"] == {"train": 150, "dev": 16, "test": 24}
    # The aligned files share their French sentences (multi-way, like FLORES): a French-pivot training
    # pair whose French sentence is held out for another language is decontaminated.
    decontaminated = {"wol_Latn": 9, "bci_Latn": 10, "swh_Latn": 0, "lin_Latn": 11}
    for code, removed in decontaminated.items():
        lang = stats["languages"][code]
        assert (lang["pairs"], lang["monolingual"], lang["quarantined"]) == (40 - removed, 15, 0), code
        assert lang["splits"] == {"train": 45 - removed, "dev": 4, "test": 6}
        assert lang["dropped"]["decontaminated"] == removed
    dropped = read_jsonl(run_dir.corpus / "dropped.jsonl")
    assert sorted((d["source"], d["line"], d["reason"]) for d in dropped if d["reason"] != "decontaminated") == sorted([
        ("wol-demo", 42, "duplicate"), ("bci-demo", 21, "empty"), ("bci-demo-mono", 8, "empty"),
        ("swh-demo", 41, "duplicate"), ("lin-demo", 27, "empty"), ("lin-demo-mono", 16, "duplicate"),
    ])  # fmt: skip
    for d in dropped:
        if d["reason"] == "decontaminated":  # by the pivot of another language's dev or test pair
            assert d["overlaps"].endswith(":pivot") and d["overlaps"].split(":")[1] != d["source"], d
    rows = (
        pq.read_table(run_dir.split("train")).to_pylist() + pq.read_table(run_dir.split("test")).to_pylist()
    )
    rows += pq.read_table(run_dir.split("dev")).to_pylist()
    assert all(unicodedata.is_normalized("NFC", r["text"] + r["pivot_text"]) for r in rows)
    assert any("jërëjëf" in r["text"] for r in rows) and any(
        r["pivot_text"] == "Le marché est loin." for r in rows
    )
    assert {r["pivot_language"] for r in rows if r["language"] == "swh_Latn"} == {"eng_Latn", ""}
