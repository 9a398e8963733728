"""Readers: one source in, a stream of :class:`Record` out, one record per line (or row).

A reader never holds a whole file in memory and never raises on a bad line: malformed input (bad
JSON, a TSV row with the wrong number of columns, a missing field, bytes that are not UTF-8) comes out
as a record whose ``error`` says why, so the builder can quarantine and count it. Only configuration
problems raise ``ValueError``: a missing file, or a TSV header / parquet schema without a configured
column.

Readers yield the text as found (no normalization); :mod:`langkit.corpus.build` normalizes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langkit.config import SourceConfig

BOM = b"\xef\xbb\xbf"
RAW_CHARS = 500
"""How much of a malformed line is kept in the quarantine file, in characters."""
PARQUET_BATCH_ROWS = 1024
"""Rows per batch read from a parquet file (memory stays at one batch)."""


@dataclass(slots=True)
class Record:
    """One segment of a source, with where it came from inside that source."""

    text: str
    """Target-language text, as read (not yet normalized)."""
    pivot_text: str = ""
    """Aligned pivot text, as read; empty for monolingual sources."""
    line: int = 0
    """1-based line number in the file (header included for TSV), or 1-based row for parquet / hf."""
    error: str = ""
    """Why this line is malformed and must be quarantined; empty for a well-formed record."""
    raw: str = ""
    """The malformed line (cut to RAW_CHARS), for the quarantine file; empty for a good record."""


def source_name(source: SourceConfig) -> str:
    """The configured name, else the file name (or Hub id for ``format: hf``)."""
    if source.name:
        return source.name
    return source.path if source.format == "hf" else Path(source.path).name


def read_source(source: SourceConfig) -> Iterator[Record]:
    """Stream the records of one source, whatever its format."""
    if source.format == "hf":
        return _read_hf(source)
    path = Path(source.path)
    if not path.is_file():
        raise ValueError(f"corpus source {source_name(source)!r}: file not found: {path}")
    readers = {"text": _read_text, "jsonl": _read_jsonl, "tsv": _read_tsv, "parquet": _read_parquet}
    if source.format not in readers:
        raise ValueError(f"corpus source {source_name(source)!r}: unknown format {source.format!r}")
    return readers[source.format](source, path)


# --------------------------------------------------------------------------------------------------
# Line-based formats: read bytes, decode line by line, so one bad byte costs one line, not the file.
# --------------------------------------------------------------------------------------------------


def _lines(path: Path) -> Iterator[tuple[int, str | None, bytes]]:
    """(1-based line number, decoded line without its line end or None if not UTF-8, raw bytes)."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            raw = raw.rstrip(b"\r\n")  # LF or CRLF
            try:
                yield number, raw.decode("utf-8"), raw
            except UnicodeDecodeError:
                yield number, None, raw


def _undecodable(number: int, raw: bytes) -> Record:
    return Record(
        "", line=number, error="undecodable: not valid UTF-8", raw=raw.decode("utf-8", "replace")[:RAW_CHARS]
    )


def _read_text(source: SourceConfig, path: Path) -> Iterator[Record]:
    for number, line, raw in _lines(path):
        yield _undecodable(number, raw) if line is None else Record(line, line=number)


def _field(row: dict[str, Any], name: str) -> tuple[str, str]:
    """(value, error) of one field of a JSON object / parquet row."""
    if name not in row:
        return "", f"missing field {name!r}"
    value = row[name]
    if not isinstance(value, str):
        return "", f"field {name!r} is not a string (got {type(value).__name__})"
    return value, ""


def _from_row(row: dict[str, Any], source: SourceConfig, number: int, raw: str) -> Record:
    text, error = _field(row, source.text_field)
    pivot = ""
    if not error and source.pivot_field:
        pivot, error = _field(row, source.pivot_field)
    if error:
        return Record("", line=number, error=error, raw=raw[:RAW_CHARS])
    return Record(text, pivot, line=number)


def _read_jsonl(source: SourceConfig, path: Path) -> Iterator[Record]:
    for number, line, raw in _lines(path):
        if line is None:
            yield _undecodable(number, raw)
        elif not line.strip():
            yield Record("", line=number)  # a blank line: dropped as ``empty``, not malformed
        else:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield Record("", line=number, error=f"bad JSON: {err}", raw=line[:RAW_CHARS])
                continue
            if not isinstance(row, dict):
                yield Record("", line=number, error="not a JSON object", raw=line[:RAW_CHARS])
            else:
                yield _from_row(row, source, number, line)


def _read_tsv(source: SourceConfig, path: Path) -> Iterator[Record]:
    """Plain tab-separated values with a header row; no quoting (a quote is just a character)."""
    lines = _lines(path)
    first = next(lines, None)
    if first is None or first[1] is None:
        raise ValueError(f"corpus source {source_name(source)!r}: {path} has no readable header row")
    header = [name.strip() for name in first[1].split("\t")]
    wanted = [source.text_field] + ([source.pivot_field] if source.pivot_field else [])
    for column in wanted:
        if column not in header:
            raise ValueError(
                f"{path}: column {column!r} not in the TSV header (columns: {', '.join(header)})"
            )
    text_col = header.index(source.text_field)
    pivot_col = header.index(source.pivot_field) if source.pivot_field else -1
    for number, line, raw in lines:
        if line is None:
            yield _undecodable(number, raw)
        elif not line.strip():
            yield Record("", line=number)
        else:
            cells = line.split("\t")
            if len(cells) != len(header):
                error = f"expected {len(header)} tab-separated columns, got {len(cells)}"
                yield Record("", line=number, error=error, raw=line[:RAW_CHARS])
            else:
                yield Record(cells[text_col], cells[pivot_col] if pivot_col >= 0 else "", line=number)


# --------------------------------------------------------------------------------------------------
# Tabular formats: rows are dicts; ``line`` is the 1-based row number.
# --------------------------------------------------------------------------------------------------


def _columns(source: SourceConfig) -> list[str]:
    return [source.text_field] + ([source.pivot_field] if source.pivot_field else [])


def _check_columns(source: SourceConfig, available: list[str], where: str) -> None:
    for column in _columns(source):
        if column not in available:
            raise ValueError(f"{where}: column {column!r} not found (columns: {', '.join(available)})")


def _read_parquet(source: SourceConfig, path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    _check_columns(source, parquet.schema_arrow.names, str(path))
    number = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=_columns(source)):
        for row in batch.to_pylist():
            number += 1
            yield _from_row(row, source, number, json.dumps(row, ensure_ascii=False, default=str))


def _read_hf(source: SourceConfig) -> Iterator[Record]:
    """A Hugging Face dataset (Hub id or local dataset folder), streamed so nothing is downloaded whole."""
    import datasets

    dataset = datasets.load_dataset(
        source.path, source.hf_config or None, split=source.hf_split, streaming=True
    )
    if dataset.features is not None:
        _check_columns(source, list(dataset.features), f"dataset {source.path} split {source.hf_split}")
    for number, row in enumerate(dataset, start=1):
        yield _from_row(row, source, number, json.dumps(row, ensure_ascii=False, default=str))
