"""`langkit corpus review`: a seeded sample of kept, dropped and quarantined records as CSV and XLSX."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from langkit.cli import main
from langkit.corpus.review import REVIEW_COLUMNS, reservoir, sample_records, write_review

WOLOF = [
    "Dafa neex lool", "Maa ngi dem ca marse ba", "Jërëjëf ci sa ndimbal", "Ñaata la jar",
    "Ba suba inshaa Allah", "Sama xarit dafa feebar", "Xale yi dem nañu lekool", "=Jamm rekk la bëgg",
]  # fmt: skip


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("review")
    lines = WOLOF + ["Dafa neex lool", "", ""]  # a duplicate and blank lines to drop
    (d / "wol.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    bad = ["{not json \x01", json.dumps({"text": "Nanga def waay"}), "[1, 2]"]
    (d / "wol.jsonl").write_text("\n".join(bad) + "\n", encoding="utf-8")
    cfg = {
        "languages": ["wol_Latn"],
        "corpus": {"dev_size": 0, "test_size": 0, "sources": [
            {"path": "wol.txt", "format": "text", "language": "wol_Latn", "name": "wol-txt", "license": "CC0-1.0"},
            {"path": "wol.jsonl", "format": "jsonl", "language": "wol_Latn", "name": "wol-j", "license": "CC0-1.0"},
        ]},
    }  # fmt: skip
    path = d / "run.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run_dir(config: Path) -> Path:
    out = config.parent / "run"
    assert main(["-q", "corpus", "review", str(config), "--out", str(out), "--n", "3"]) == 0
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == REVIEW_COLUMNS
        return list(reader)


def read_xlsx(path: Path) -> tuple[list[list[Any]], Any]:
    import openpyxl

    workbook = openpyxl.load_workbook(path)
    sheet = workbook["review"]
    return [list(row) for row in sheet.iter_rows(values_only=True)], sheet


def test_cli_builds_then_writes_both_sheets_with_the_same_rows(run_dir: Path) -> None:
    corpus = run_dir / "corpus"
    rows = read_csv(corpus / "review" / "review.csv")
    stats = json.loads((corpus / "stats.json").read_text(encoding="utf-8"))
    lang = stats["languages"]["wol_Latn"]
    n_dropped = sum(lang["dropped"].values())
    statuses = [r["status"] for r in rows]
    assert statuses == sorted(statuses, key=["kept", "dropped", "quarantined"].index)  # grouped by pile
    assert statuses.count("kept") == min(3, lang["kept"])
    assert statuses.count("dropped") == min(3, n_dropped) and statuses.count("quarantined") == min(
        3, lang["quarantined"]
    )
    kept_ids = {
        r["id"]
        for s in ("train", "dev", "test")
        for r in pq.read_table(corpus / "dataset" / f"{s}.parquet").to_pylist()
    }
    quarantine = [
        json.loads(line) for line in (corpus / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    for row in rows:
        assert row["language"] == "wol_Latn" and row["source"] in ("wol-txt", "wol-j") and row["file"]
        if row["status"] == "kept":
            assert row["id"] in kept_ids and row["reason"].startswith("split: ")
        else:
            assert row["reason"] and row["id"] == f"{row['source']}:{row['line']}"
    assert {(r["file"], int(r["line"]), r["reason"]) for r in rows if r["status"] == "quarantined"} == {
        (q["file"], q["line"], q["reason"]) for q in quarantine
    }
    table, _ = read_xlsx(corpus / "review" / "review.xlsx")
    assert tuple(table[0]) == REVIEW_COLUMNS
    as_text = [["" if v is None else str(v).replace("\\x01", "\x01") for v in row] for row in table[1:]]
    assert as_text == [[r[c] for c in REVIEW_COLUMNS] for r in rows]


def test_review_of_an_existing_run_dir_is_seeded(run_dir: Path) -> None:
    a = sample_records(run_dir, n=4, seed=1)
    assert a == sample_records(run_dir / "corpus", n=4, seed=1)  # run dir or corpus dir
    all_rows = sample_records(run_dir, n=1000, seed=0)
    kept = [r for r in all_rows if r["status"] == "kept"]
    assert len(kept) >= 6
    picks = {
        tuple(r["id"] for r in sample_records(run_dir, n=2, seed=s) if r["status"] == "kept")
        for s in range(8)
    }
    assert len(picks) > 1  # the seed changes the sample
    # The CLI on the run directory itself (no config needed).
    out = write_review(run_dir, run_dir / "elsewhere", n=1000, seed=0)
    assert [p.name for p in out] == ["review.csv", "review.xlsx"]
    rows = read_csv(out[0])
    formula = next(r for r in rows if r["text"].startswith("="))
    table, sheet = read_xlsx(out[1])
    cell = next(c for row in sheet.iter_rows() for c in row if c.value == formula["text"])
    assert cell.data_type == "s"  # text that starts with "=" stays text, not a formula
    assert main(["-q", "corpus", "review", str(run_dir), "--n", "2"]) == 0


def test_reservoir_is_uniform_ordered_and_bounded() -> None:
    sample = reservoir(range(1000), 10, random.Random(0))
    assert len(sample) == 10 and sample == sorted(sample)
    assert sample == reservoir(iter(range(1000)), 10, random.Random(0))
    assert reservoir(range(3), 10, random.Random(0)) == [0, 1, 2]
    counts = [0] * 10
    for seed in range(2000):
        for x in reservoir(range(10), 3, random.Random(seed)):
            counts[x] += 1
    assert all(500 < c < 700 for c in counts)  # each item kept 3/10 of the time (600 expected)


def test_review_needs_a_built_corpus(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a built corpus"):
        sample_records(tmp_path)
    assert main(["-q", "corpus", "review", str(tmp_path / "missing.yaml")]) == 2
