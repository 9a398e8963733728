"""A sample of a built corpus for manual review: kept, dropped and quarantined records side by side in
a spreadsheet (CSV and XLSX), so a linguist can check what the pipeline kept and what it threw away.

The sample is seeded and streamed: each of the three piles (the split files, ``dropped.jsonl``,
``quarantine.jsonl``) is read once with reservoir sampling, so memory holds ``n`` records per pile
whatever the corpus size, and the same corpus and seed give the same sheet. Rows keep their pile's
order (kept, then dropped, then quarantined; within each, the order the build wrote them). The last two
columns, ``verdict`` and ``comment``, are left empty for the reviewer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from langkit.sheets import csv_bytes, xlsx_bytes
from langkit.utils import atomic_write_bytes, get_logger, read_json

log = get_logger("corpus.review")

T = TypeVar("T")

REVIEW_COLUMNS = (
    "id", "language", "source", "file", "line", "status", "reason", "text", "pivot_text", "normalization",
    "verdict", "comment",
)  # fmt: skip
"""Columns of the review sheet; ``verdict`` and ``comment`` are for the reviewer to fill in."""
SPLITS = ("train", "dev", "test")
_WIDTHS = {"id": 18, "language": 10, "source": 14, "file": 20, "line": 7, "status": 11, "reason": 24,
           "text": 60, "pivot_text": 60, "normalization": 18, "verdict": 10, "comment": 30}  # fmt: skip


def corpus_folder(path: str | Path) -> Path:
    """The corpus folder of a run directory, or ``path`` itself when it is one (holds stats.json)."""
    path = Path(path)
    for candidate in (path, path / "corpus"):
        if (candidate / "stats.json").is_file():
            return candidate
    raise ValueError(f"{path} is not a built corpus or run directory (no stats.json in it or in corpus/)")


def reservoir(items: Iterable[T], n: int, rng: random.Random) -> list[T]:
    """A uniform sample of ``n`` items (all of them if fewer), in their original order, holding at
    most ``n`` items in memory (Algorithm R)."""
    kept: list[tuple[int, T]] = []
    for i, item in enumerate(items):
        if i < n:
            kept.append((i, item))
        else:
            j = rng.randrange(i + 1)
            if j < n:
                kept[j] = (i, item)
    return [item for _, item in sorted(kept, key=lambda pair: pair[0])]


def _normalization(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _kept(corpus: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    for split in SPLITS:
        path = corpus / "dataset" / f"{split}.parquet"
        if not path.is_file():
            continue
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                yield {
                    **{
                        k: row.get(k, "")
                        for k in ("id", "language", "source", "file", "line", "text", "pivot_text")
                    },
                    "status": "kept",
                    "reason": f"split: {split}",
                    "normalization": _normalization(row.get("normalization")),
                }


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _set_aside(corpus: Path, status: str, languages: dict[str, str]) -> Iterator[dict[str, Any]]:
    name = "dropped.jsonl" if status == "dropped" else "quarantine.jsonl"
    for row in _jsonl(corpus / name):
        source = row.get("source", "")
        yield {
            "id": f"{source}:{row.get('line', '')}",
            "language": row.get("language") or languages.get(source, ""),
            "source": source,
            "file": row.get("file", ""),
            "line": row.get("line", ""),
            "status": status,
            "reason": row.get("reason", ""),
            "text": row.get("text", row.get("raw", "")),
            "pivot_text": row.get("pivot_text", ""),
            "normalization": _normalization(row.get("normalization")),
        }


def sample_records(corpus_dir: str | Path, n: int = 50, seed: int = 0) -> list[dict[str, Any]]:
    """Up to ``n`` kept, ``n`` dropped and ``n`` quarantined records of a built corpus (or run
    directory), chosen by a seeded reservoir sample, as rows with :data:`REVIEW_COLUMNS`."""
    if n < 1:
        raise ValueError(f"review sample size must be >= 1, got {n}")
    corpus = corpus_folder(corpus_dir)
    stats = read_json(corpus / "stats.json")
    languages = {s.get("name", ""): s.get("language", "") for s in stats.get("sources", [])}
    rows: list[dict[str, Any]] = []
    piles = {
        "kept": _kept(corpus),
        "dropped": _set_aside(corpus, "dropped", languages),
        "quarantined": _set_aside(corpus, "quarantined", languages),
    }
    for status, records in piles.items():
        # A string seed is hashed (SHA-512) by random.Random: stable across runs and Python versions.
        rows += reservoir(records, n, random.Random(f"{seed}:{status}"))
    return [{c: row.get(c, "") for c in REVIEW_COLUMNS} for row in rows]


def write_review(
    corpus_dir: str | Path, out_dir: str | Path | None = None, n: int = 50, seed: int = 0
) -> tuple[Path, Path]:
    """Write ``review.csv`` and ``review.xlsx`` (the same rows) for a built corpus or run directory into
    ``out_dir`` (default ``<corpus>/review``); return their paths."""
    rows = sample_records(corpus_dir, n, seed)
    out = Path(out_dir) if out_dir is not None else corpus_folder(corpus_dir) / "review"
    csv_path, xlsx_path = out / "review.csv", out / "review.xlsx"
    atomic_write_bytes(csv_path, csv_bytes(REVIEW_COLUMNS, rows))
    atomic_write_bytes(xlsx_path, xlsx_bytes(REVIEW_COLUMNS, rows, "review", _WIDTHS))
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("kept", "dropped", "quarantined")}
    log.info("review sample (%s) written to %s and %s", counts, csv_path, xlsx_path)
    return csv_path, xlsx_path
