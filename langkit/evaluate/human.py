"""Human evaluation: the blinded sheet for judges out, their ratings back in."""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langkit.evaluate.metrics import plain_text
from langkit.rundir import RunDir
from langkit.sheets import SheetError, csv_bytes, read_sheet, xlsx_bytes
from langkit.utils import (
    atomic_write_bytes,
    atomic_write_text,
    get_logger,
    write_json,
)

log = get_logger("evaluate")

RATING_COLUMNS = ("adequacy", "fluency")
RATING_RANGE = (1, 5)
SHEET_COLUMNS = ("item_id", "source", "output", "reference", "note", *RATING_COLUMNS)
KEY_COLUMNS = ("item_id", "system", "direction", "source_language", "target_language", "test_id")
_SHEET_WIDTHS = {"item_id": 18, "source": 50, "output": 50, "reference": 50, "note": 24, "adequacy": 10, "fluency": 10}
REPEATED_OUTPUT = 3
"""An output found this many times in a sheet gets a note: a system answering the same thing to everything."""

# --------------------------------------------------------------------------------------------------
# Human evaluation: blinded sheet out, ratings back in
# --------------------------------------------------------------------------------------------------


@dataclass
class Translation:
    """One system's output for one test item: a row of the human-eval sheet and its key."""

    system: str
    direction: str
    source_language: str
    target_language: str
    test_id: str
    source: str
    output: str
    """As the model wrote it (what the judges see)."""
    reference: str
    scored: str = ""
    """The output as scored: normalized like the reference (the paired test compares these)."""


def write_human_eval(translations: Sequence[Translation], out_dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``human_eval.csv`` and ``human_eval.xlsx`` (the same sheet: shuffled with ``seed``, opaque ids,
    no system or direction, empty rating columns), ``human_eval_key.csv`` (what each item is) and
    ``human_eval_README.md``. Returns (sheet, key), the sheet as CSV."""
    out_dir = Path(out_dir)
    shuffled = list(translations)
    random.Random(seed).shuffle(shuffled)
    width = max(4, len(str(len(shuffled))))
    # Every export numbers from 1: a tag in the ids makes a sheet read with another export's key fail
    # instead of mis-assigning its ratings. It hashes only what the judges see, so it reveals nothing.
    visible = hashlib.sha256(repr([(t.source, t.output, t.reference) for t in shuffled]).encode("utf-8"))
    tag = visible.hexdigest()[:6]
    repeats = Counter(t.output.strip() for t in shuffled)
    sheet_rows, key_rows = [], []
    for n, t in enumerate(shuffled, start=1):
        item_id = f"item-{tag}-{n:0{width}d}"
        sheet_rows.append({"item_id": item_id, "source": t.source, "output": t.output, "reference": t.reference,
                           "note": _note(t, repeats), "adequacy": "", "fluency": ""})
        key_rows.append({"item_id": item_id, "system": t.system, "direction": t.direction,
                         "source_language": t.source_language, "target_language": t.target_language,
                         "test_id": t.test_id})
    sheet, key = out_dir / "human_eval.csv", out_dir / "human_eval_key.csv"
    # UTF-8 with a BOM: Excel opens it as UTF-8 (without, it reads cp1252 and garbles ë, ɛ, ŋ).
    atomic_write_bytes(sheet, csv_bytes(SHEET_COLUMNS, sheet_rows))
    # The same sheet for Excel users: text cells stay text (an output starting with "=" or "-" is not a formula).
    atomic_write_bytes(sheet.with_suffix(".xlsx"), xlsx_bytes(SHEET_COLUMNS, sheet_rows, "ratings", _SHEET_WIDTHS))
    atomic_write_bytes(key, csv_bytes(KEY_COLUMNS, key_rows))
    atomic_write_text(out_dir / "human_eval_README.md", HUMAN_EVAL_README.format(n=len(sheet_rows)))
    return sheet, key


def _note(t: Translation, repeats: Counter[str]) -> str:
    """What a judge should know of an output at a glance (and the report flags): empty, a copy of the
    source, or a text repeated across the sheet. It speaks of the output only, never of its system."""
    output = t.output.strip()
    if not output:
        return "empty output"
    if plain_text(output) == plain_text(t.source):
        return "output copies the source"
    if repeats[output] >= REPEATED_OUTPUT:
        return f"this exact output is in {repeats[output]} rows"
    return ""


HUMAN_EVAL_README = """# Rating the translations in human_eval.xlsx (or human_eval.csv)

Thank you for judging. The sheet holds {n} translations in random order. The same rows are in both
files: with Excel, open `human_eval.xlsx` (the CSV opens badly in a French-language Excel, and Excel may
read a translation that starts with = or - as a formula); LibreOffice and other programs can use either.
Each row has:

- `item_id`: leave it exactly as it is (it is how your ratings are matched back);
- `source`: the sentence to translate;
- `output`: a machine translation of it; **this is what you rate**;
- `reference`: one good human translation, to help you; other wordings can be just as good;
- `note`: filled only when the output is empty, copies the source, or is the exact same text as several
  other rows (a system that answers the same thing to everything); rate such rows as they are.

Several rows may share a source: they come from different systems, shown in no particular order.
Rate each row on its own.

Fill in two columns with a whole number from 1 to 5:

**adequacy**: how much of the source's meaning does the output carry?

- 5: all of it
- 4: most of it
- 3: much of it
- 2: a little of it
- 1: none of it, or the output is not in the target language

**fluency**: read the output alone, without the source: is it good text in its language?

- 5: flawless
- 4: good, with small slips
- 3: understandable, but clearly not how a native speaker writes
- 2: hard to follow
- 1: incomprehensible

Spelling counts for fluency: judge the language's usual orthography (for Wolof the CLAD spelling with
à é ë ñ ŋ ó; for Baoulé and Lingala the open vowels ɛ and ɔ; missing tone marks in Lingala are normal).

Leave **both** cells empty if you cannot judge a row (it is counted as not rated, never guessed).
Type the ratings as plain numbers (not formulas). Do not add, delete or rename columns. You may sort or
filter while working. Save in the format you opened (Excel Workbook, or CSV UTF-8 with commas or
semicolons) and send back that one file.
`human_eval_key.csv` says which system made each output: the judges must not see it.

Read the ratings back with `langkit.evaluate.import_ratings("human_eval.xlsx", "human_eval_key.csv")`
(or the `.csv`).
"""


class RatingsError(SheetError):
    """A filled-in sheet that cannot be read: the message names the file, the line and the problem
    (every rejected row, one per line, when there are several)."""


def _rating(path: Path, line: int, column: str, value: str | None) -> int | None:
    value = (value or "").strip()
    if not value:
        return None
    low, high = RATING_RANGE
    if not re.fullmatch(r"\d+([.,]0+)?", value):  # "4,0": a French-locale spreadsheet's number format
        raise RatingsError(f"{path}, line {line}: {column} must be a whole number from {low} to {high}, got {value!r}")
    rating = int(re.split(r"[.,]", value)[0])
    if not low <= rating <= high:
        raise RatingsError(f"{path}, line {line}: {column} must be from {low} to {high}, got {rating}")
    return rating


def _blank(row: dict[str, str]) -> bool:
    """A row with nothing in it (spreadsheets leave them at the end, or between rows)."""
    return not any(value.strip() for value in row.values())


def _read(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    try:
        return read_sheet(path)
    except SheetError as err:
        raise RatingsError(str(err)) from None


def import_ratings(sheet_csv: str | Path, key_csv: str | Path) -> dict[str, Any]:
    """Read a filled-in ``human_eval.csv`` or ``human_eval.xlsx`` with its key; mean adequacy and fluency per
    system and direction.

    Returns ``{"items", "rated", "blank", "missing", "missing_ids", "systems": {system: {direction: {"n", "rated",
    "blank", "adequacy", "fluency"}}}}``: a row with both ratings empty is counted as ``blank``; a key item
    absent from the sheet as ``missing``; means are over rated rows (None when none is). Raises
    :class:`RatingsError` naming file and line for a file that is not UTF-8, a rating that is not a whole
    number from 1 to 5, a row with only one of the two ratings, or an item id that is unknown (a key from
    another export) or repeated (in the sheet or the key); it lists every rejected row and imports none."""
    sheet_path, key_path = Path(sheet_csv), Path(key_csv)
    key_fields, key_rows = _read(key_path)
    if missing_columns := [c for c in KEY_COLUMNS if c not in key_fields]:
        raise RatingsError(f"{key_path}: missing column(s) {', '.join(missing_columns)}")
    key: dict[str, dict[str, str]] = {}
    key_lines: dict[str, int] = {}
    for line, row in key_rows:
        item_id = (row.get("item_id") or "").strip()
        if _blank(row):
            continue  # an empty row, if the key went through a spreadsheet too
        if item_id in key:  # the later row would silently take over the earlier one's ratings
            raise RatingsError(f"{key_path}, line {line}: item_id {item_id!r} repeats line {key_lines[item_id]}")
        key[item_id], key_lines[item_id] = row, line
    fields, rows = _read(sheet_path)
    if missing_columns := [c for c in ("item_id", *RATING_COLUMNS) if c not in fields]:
        raise RatingsError(f"{sheet_path}: missing column(s) {', '.join(missing_columns)} (found: {', '.join(fields)})")

    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for row in key.values():
        cells.setdefault((row["system"], row["direction"]), {"n": 0, "rated": 0, "blank": 0, "adequacy": [], "fluency": []})
    seen: dict[str, int] = {}
    rejected: list[str] = []  # every bad row, so that one round of fixes is enough
    for line, row in rows:
        item_id = (row.get("item_id") or "").strip()
        if _blank(row):
            continue  # an empty line a spreadsheet left at the end
        if item_id not in key:
            rejected.append(f"{sheet_path}, line {line}: item_id {item_id!r} is not in {key_path}"
                            " (a sheet and a key from different exports?)")
            continue
        if item_id in seen:
            rejected.append(f"{sheet_path}, line {line}: item_id {item_id!r} repeats line {seen[item_id]}")
            continue
        seen[item_id] = line
        try:
            ratings = {c: _rating(sheet_path, line, c, row.get(c)) for c in RATING_COLUMNS}
        except RatingsError as err:
            rejected.append(str(err))
            continue
        cell = cells[(key[item_id]["system"], key[item_id]["direction"])]
        if all(v is None for v in ratings.values()):
            cell["n"] += 1
            cell["blank"] += 1
            continue
        if any(v is None for v in ratings.values()):
            empty = [c for c, v in ratings.items() if v is None][0]
            rejected.append(f"{sheet_path}, line {line}: {empty} is empty but the other rating is filled; "
                            "rate both or leave both empty")
            continue
        cell["n"] += 1
        cell["rated"] += 1
        for c, v in ratings.items():
            cell[c].append(v)
    if len(rejected) == 1:
        raise RatingsError(rejected[0])
    if rejected:
        raise RatingsError(f"{sheet_path}: {len(rejected)} row(s) rejected, nothing imported:\n" + "\n".join(rejected))

    systems: dict[str, dict[str, dict[str, Any]]] = {}
    for (system, direction), cell in sorted(cells.items()):
        systems.setdefault(system, {})[direction] = {
            "n": cell["n"], "rated": cell["rated"], "blank": cell["blank"],
            **{c: round(sum(cell[c]) / len(cell[c]), 4) if cell[c] else None for c in RATING_COLUMNS},
        }
    rated = sum(c["rated"] for c in cells.values())
    blank = sum(c["blank"] for c in cells.values())
    missing_ids = [item_id for item_id in key if item_id not in seen]
    if missing_ids:
        log.warning("%s: %d item(s) of %s are not in the sheet (%s%s)", sheet_path, len(missing_ids), key_path,
                    ", ".join(missing_ids[:5]), ", ..." if len(missing_ids) > 5 else "")
    return {"sheet": str(sheet_path), "items": len(seen), "rated": rated, "blank": blank,
            "missing": len(missing_ids), "missing_ids": missing_ids, "systems": systems}



HUMAN_RATINGS_NAME = "human_ratings.json"


def import_run_ratings(run_dir: RunDir, sheets: Sequence[str | Path]) -> dict[str, Any]:
    """Read the judges' filled-in sheets (one per judge, CSV or XLSX) with the run's key, and write
    ``eval/human_ratings.json``: each sheet's :func:`import_ratings` result, and ``pooled``: per system and
    direction, the means over every rated row of every sheet. Every sheet is checked before anything is
    written (:class:`RatingsError` names the file and line)."""
    key = run_dir.require(run_dir.eval / "human_eval_key.csv", "eval")
    resolved = [Path(sheet).resolve() for sheet in sheets]
    if len(set(resolved)) < len(resolved):
        twice = sorted({str(p) for p in resolved if resolved.count(p) > 1})
        raise RatingsError(f"{', '.join(twice)}: given more than once; each judge's sheet counts once")
    judges = [import_ratings(sheet, key) for sheet in sheets]
    pooled: dict[str, dict[str, dict[str, Any]]] = {}
    for result in judges:
        for system, directions in result["systems"].items():
            for direction, cell in directions.items():
                into = pooled.setdefault(system, {}).setdefault(
                    direction, {"sheets": 0, "rated": 0, "blank": 0, **{c: 0.0 for c in RATING_COLUMNS}})
                into["sheets"] += 1
                into["rated"] += cell["rated"]
                into["blank"] += cell["blank"]
                for c in RATING_COLUMNS:
                    into[c] += (cell[c] or 0.0) * cell["rated"]  # sums for now: means below
    for directions in pooled.values():
        for cell in directions.values():
            for c in RATING_COLUMNS:
                cell[c] = round(cell[c] / cell["rated"], 4) if cell["rated"] else None
    ratings = {"key": str(key), "judges": judges, "pooled": pooled}
    write_json(run_dir.eval / HUMAN_RATINGS_NAME, ratings)
    return ratings
