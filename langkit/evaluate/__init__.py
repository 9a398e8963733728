"""Stage 4: translate the held-back test split both ways, score it, and export a blinded human-eval sheet.

The task (which split, which directions, which metrics) is ``eval/translation.yaml``, read by
:func:`load_task`. For every target language of the run and both directions (pivot -> language,
language -> pivot), each system translates the first ``eval.max_items`` aligned pairs by greedy decoding
in harmony format (:func:`translate`); :func:`score` gives chrF++ (the primary metric, as FLORES/NLLB
report it), chrF and BLEU, each with its sacrebleu signature. Systems: ``langkit`` (base + extended
tokenizer + the trained adapter) and, with ``eval.compare_base``, ``base`` (no adapter, base tokenizer).

Outputs in ``RUN/eval/``::

    outputs/{system}.{src}-{tgt}.{src,hyp,ref}   one segment per line: rescore with sacrebleu's own CLI
    report.json          scores + signatures per system and direction (the publish stage reads it)
    report.md            the same as a table
    human_eval.csv       blinded, shuffled sheet for judges (item_id, source, output, reference, adequacy, fluency)
    human_eval.xlsx      the same sheet for Excel
    human_eval_key.csv   item_id -> system, direction, languages, test id (keep it away from the judges)
    human_eval_README.md how to rate

:func:`import_ratings` reads a filled-in sheet back with its key and averages the ratings.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from langkit.config import RunConfig
from langkit.harmony import STOP_TOKENS, render_prompt
from langkit.languages import get_language
from langkit.rundir import RunDir
from langkit.sheets import SheetError, csv_bytes, read_sheet, xlsx_bytes
from langkit.utils import (
    atomic_write_bytes,
    atomic_write_text,
    get_logger,
    progress,
    read_json,
    sha256_file,
    write_json,
)

log = get_logger("evaluate")

DEFAULT_TASK_FILE = Path(__file__).resolve().parent.parent / "eval" / "translation.yaml"
"""The task definition in the repository; an installed wheel without it falls back to ``Task()``."""

METRICS = ("chrf++", "chrf", "bleu")
"""Metric names in report.json: chrF++ = ``CHRF(word_order=2)``, chrF = ``CHRF()`` (chrF2), BLEU = ``BLEU()``."""
DIRECTIONS = ("pivot-language", "language-pivot")
RATING_COLUMNS = ("adequacy", "fluency")
RATING_RANGE = (1, 5)
SHEET_COLUMNS = ("item_id", "source", "output", "reference", *RATING_COLUMNS)
KEY_COLUMNS = ("item_id", "system", "direction", "source_language", "target_language", "test_id")
_SHEET_WIDTHS = {"item_id": 18, "source": 50, "output": 50, "reference": 50, "adequacy": 10, "fluency": 10}

# Every character Python's str.splitlines() breaks on: an output file must keep one segment per line.
_LINE_BREAKS = re.compile(r"[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+")


# --------------------------------------------------------------------------------------------------
# The task definition (eval/translation.yaml)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """What the eval stage measures. Defaults equal ``eval/translation.yaml`` (a test keeps them in sync)."""

    name: str = "translation"
    split: str = "test"
    """Split of the corpus stage's dataset to translate: ``test`` (held back) or ``dev``."""
    pivot: str = "default"
    """``default``: only pairs whose pivot is the language's default pivot (languages.py);
    ``any``: every aligned pair, grouped by its own pivot."""
    directions: tuple[str, ...] = DIRECTIONS
    """``pivot-language`` (source = pivot_text, reference = text) and/or ``language-pivot``."""
    metrics: tuple[str, ...] = METRICS
    primary: str = "chrf++"
    bootstrap: int = 1000
    """Bootstrap resamples for the 95% confidence interval of chrF++; 0 turns it off."""


def load_task(path: str | Path = DEFAULT_TASK_FILE) -> Task:
    """Read and check a task file; unknown keys and unknown values are errors naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"eval task file not found: {path}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an eval task must be a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(Task)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
    for key in ("directions", "metrics"):
        if key in data:
            if not isinstance(data[key], list) or not data[key]:
                raise ValueError(f"{path}: {key} must be a non-empty list")
            data[key] = tuple(str(v) for v in data[key])
    task = Task(**data)
    problems = []
    if task.split not in ("test", "dev"):
        problems.append(f"split must be test or dev, got {task.split!r}")
    if task.pivot not in ("default", "any"):
        problems.append(f"pivot must be default or any, got {task.pivot!r}")
    problems += [f"unknown direction {d!r} (known: {', '.join(DIRECTIONS)})" for d in task.directions if d not in DIRECTIONS]
    problems += [f"unknown metric {m!r} (known: {', '.join(METRICS)})" for m in task.metrics if m not in METRICS]
    if task.primary not in task.metrics:
        problems.append(f"primary metric {task.primary!r} is not among metrics")
    if not isinstance(task.bootstrap, int) or task.bootstrap < 0:
        problems.append(f"bootstrap must be an integer >= 0, got {task.bootstrap!r}")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return task


def default_task() -> Task:
    if DEFAULT_TASK_FILE.exists():
        return load_task(DEFAULT_TASK_FILE)
    log.info("%s not found (installed package?); using the built-in defaults, which match it", DEFAULT_TASK_FILE)
    return Task()


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Ids of ``<|return|>`` and ``<|end|>``: a harmony answer ends at either."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS]
    unk = getattr(tokenizer, "unk_token_id", None)
    if any(i is None or i == unk for i in ids):
        raise ValueError(f"tokenizer does not know the harmony stop tokens {STOP_TOKENS}")
    return [int(i) for i in ids]


def decode_answer(tokenizer: Any, new_ids: Sequence[int], stop_ids: Sequence[int]) -> str:
    """The text of generated ids up to (not including) the first stop id; special tokens skipped."""
    stops = set(stop_ids)
    end = next((i for i, t in enumerate(new_ids) if t in stops), len(new_ids))
    return str(tokenizer.decode(list(new_ids[:end]), skip_special_tokens=True)).strip()


def translate(
    model: Any,
    tokenizer: Any,
    source_language: str,
    target_language: str,
    texts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
) -> list[str]:
    """Greedy translations of ``texts``, one string per input, in order.

    Prompts are harmony conversations (:func:`langkit.harmony.render_prompt`), batched by length and
    padded on the left so that every row's answer starts at the same position; generation stops at
    ``<|return|>`` or ``<|end|>``, and only the new tokens are decoded."""
    import torch

    if not texts:
        return []
    stop_ids = stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = stop_ids[0]
    prompts: list[list[int]] = [
        tokenizer(render_prompt(source_language, target_language, text), add_special_tokens=False)["input_ids"]
        for text in texts
    ]
    # Similar lengths together: less padding. Outputs are put back in input order below.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    device = next(model.parameters()).device
    outputs = [""] * len(texts)
    was_training = model.training
    model.eval()
    try:
        for batch in progress(batches, desc=f"{source_language}->{target_language}", total=len(batches)):
            width = max(len(prompts[i]) for i in batch)
            ids = [[pad_id] * (width - len(prompts[i])) + prompts[i] for i in batch]  # [B, width], left-padded
            mask = [[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in batch]
            with torch.no_grad():
                generated = model.generate(
                    input_ids=torch.tensor(ids, device=device),
                    attention_mask=torch.tensor(mask, device=device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=stop_ids,
                    pad_token_id=pad_id,
                    use_cache=True,
                )
            for i, row in zip(batch, generated[:, width:].tolist(), strict=True):  # [B, new]
                outputs[i] = decode_answer(tokenizer, row, stop_ids)
    finally:
        model.train(was_training)
    return outputs


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def _metric(name: str) -> Any:
    from sacrebleu.metrics import BLEU, CHRF

    if name == "chrf++":
        return CHRF(word_order=2)
    if name == "chrf":
        return CHRF()
    if name == "bleu":
        return BLEU()
    raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")


def score(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    metrics: Sequence[str] = METRICS,
    bootstrap: int = 0,
) -> dict[str, dict[str, Any]]:
    """Corpus-level sacrebleu scores, one reference per segment: ``{name: {"score", "signature"}}``.

    With ``bootstrap`` > 1 (and more than one segment), ``chrf++`` also gets ``ci95``: sacrebleu's bootstrap estimate (mean and
    half-width of the 95% interval, resampling seed ``SACREBLEU_SEED``, default 12345) and its own
    signature (which names ``bs`` and ``rs``). The plain ``signature`` stays the one sacrebleu's CLI prints."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("nothing to score: no hypotheses")
    hyps, refs = list(hypotheses), [list(references)]
    result: dict[str, dict[str, Any]] = {}
    for name in metrics:
        metric = _metric(name)
        value = metric.corpus_score(hyps, refs)
        result[name] = {"score": round(float(value.score), 4), "signature": str(metric.get_signature())}
    if bootstrap > 1 and "chrf++" in result and len(hyps) > 1:  # one segment: every resample is the same
        metric = _metric("chrf++")
        value = metric.corpus_score(hyps, refs, n_bootstrap=bootstrap)
        result["chrf++"]["ci95"] = {
            "mean": round(float(value._mean), 4),  # sacrebleu keeps the bootstrap estimate in these two
            "half_width": round(float(value._ci), 4),
            "n_bootstrap": bootstrap,
            "signature": str(metric.get_signature()),
        }
    return result


def paired_test(baseline: Sequence[str], system: Sequence[str], references: Sequence[str], *,
                n_samples: int = 1000) -> dict[str, Any]:
    """Is ``system``'s chrF++ different from ``baseline``'s on the same segments beyond chance? sacrebleu's
    paired bootstrap resampling (its CLI's ``--paired-bs``; resampling seed ``SACREBLEU_SEED``, default
    12345): ``{"metric", "baseline", "system", "p_value", "n_samples", "signature"}``. Two intervals that
    overlap are no such test: the resamples here take the same segments for both systems."""
    from sacrebleu.significance import PairedTest

    if not len(baseline) == len(system) == len(references):
        raise ValueError(f"{len(baseline)} baseline and {len(system)} system outputs for {len(references)} references")
    test = PairedTest([("baseline", list(baseline)), ("system", list(system))], {"chrf++": _metric("chrf++")},
                      [list(references)], test_type="bs", n_samples=n_samples)
    signatures, scores = test()
    (name,) = signatures  # sacrebleu names the metric itself ("chrF2++")
    base_result, system_result = scores[name]
    assert not isinstance(base_result, str) and not isinstance(system_result, str)  # the name column is apart
    return {"metric": "chrf++", "baseline": round(float(base_result.score), 4),
            "system": round(float(system_result.score), 4), "p_value": round(float(system_result.p_value or 0.0), 4),
            "n_samples": n_samples, "signature": str(signatures[name])}


# --------------------------------------------------------------------------------------------------
# Test data
# --------------------------------------------------------------------------------------------------


@dataclass
class Direction:
    """One translation direction with its aligned items (source i translates to reference i)."""

    source_language: str
    target_language: str
    test_ids: list[str]
    sources: list[str]
    references: list[str]

    @property
    def name(self) -> str:
        return f"{self.source_language}-{self.target_language}"


def one_line(text: str) -> str:
    """A segment as one line of a text file (line breaks inside it become spaces)."""
    return _LINE_BREAKS.sub(" ", text).strip()


def load_directions(split: str | Path, languages: Sequence[str], max_items: int = 0, task: Task | None = None) -> list[Direction]:
    """The aligned pairs of ``languages`` in a split, first ``max_items`` per language (0 = all), as
    translation directions (pivot -> language, then language -> pivot)."""
    import pyarrow.parquet as pq

    task = task or Task()
    table = pq.read_table(split, columns=["id", "language", "text", "pivot_language", "pivot_text"]).to_pylist()
    directions: list[Direction] = []
    for language in languages:
        default_pivot = get_language(language).default_pivot
        rows = [r for r in table if r["language"] == language and r["text"] and r["pivot_text"] and r["pivot_language"]]
        if task.pivot == "default":
            other = [r for r in rows if r["pivot_language"] != default_pivot]
            if other:
                log.warning("%s: skipping %d pair(s) whose pivot is not %s (eval task pivot: default)",
                            language, len(other), default_pivot)
            rows = [r for r in rows if r["pivot_language"] == default_pivot]
        if max_items:
            rows = rows[:max_items]
        if not rows:
            log.warning("%s: no aligned pairs in %s; nothing to evaluate for it", language, split)
            continue
        for pivot in dict.fromkeys(r["pivot_language"] for r in rows):  # pivots in order of appearance
            pairs = [r for r in rows if r["pivot_language"] == pivot]
            ids = [str(r["id"]) for r in pairs]
            text = [one_line(r["text"]) for r in pairs]
            pivot_text = [one_line(r["pivot_text"]) for r in pairs]
            if "pivot-language" in task.directions:
                directions.append(Direction(pivot, language, ids, pivot_text, text))
            if "language-pivot" in task.directions:
                directions.append(Direction(language, pivot, ids, text, pivot_text))
    return directions


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
    sheet_rows, key_rows = [], []
    for n, t in enumerate(shuffled, start=1):
        item_id = f"item-{tag}-{n:0{width}d}"
        sheet_rows.append({"item_id": item_id, "source": t.source, "output": t.output, "reference": t.reference,
                           "adequacy": "", "fluency": ""})
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


HUMAN_EVAL_README = """# Rating the translations in human_eval.xlsx (or human_eval.csv)

Thank you for judging. The sheet holds {n} translations in random order. The same rows are in both
files: with Excel, open `human_eval.xlsx` (the CSV opens badly in a French-language Excel, and Excel may
read a translation that starts with = or - as a formula); LibreOffice and other programs can use either.
Each row has:

- `item_id`: leave it exactly as it is (it is how your ratings are matched back);
- `source`: the sentence to translate;
- `output`: a machine translation of it; **this is what you rate**;
- `reference`: one good human translation, to help you; other wordings can be just as good.

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


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def report_markdown(report: dict[str, Any]) -> str:
    """report.json as a readable table, signatures listed under it."""
    lines = [
        "# Evaluation",
        "",
        f"Model `{report['model']}`, adapter `{report['adapter']}`, test set `{report['test_set']}`; "
        f"greedy decoding, at most {report['generation']['max_new_tokens']} new tokens.",
        "",
        "| system | direction | n | chrF++ | chrF | BLEU |",
        "|---|---|---:|---:|---:|---:|",
    ]
    signatures: dict[str, str] = {}
    for r in report["results"]:
        m = r["metrics"]
        chrfpp = _fmt(m.get("chrf++", {}).get("score"))
        if ci := m.get("chrf++", {}).get("ci95"):
            chrfpp += f" ± {ci['half_width']:.2f}"
        lines.append(f"| {r['system']} | {r['direction']} | {r['n']} | {chrfpp} | "
                     f"{_fmt(m.get('chrf', {}).get('score'))} | {_fmt(m.get('bleu', {}).get('score'))} |")
        for name, label in (("chrf++", "chrF++"), ("chrf", "chrF"), ("bleu", "BLEU")):
            if name in m:
                signatures.setdefault(label, m[name]["signature"])
                if ci := m[name].get("ci95"):
                    signatures.setdefault(f"{label} 95% CI (bootstrap)", ci["signature"])
    lines += ["", "chrF++ is the primary metric (as FLORES-200 and NLLB report it). "
              "± is half the width of sacrebleu's 95% bootstrap interval."]
    if paired := report.get("paired"):
        lines += ["", "Paired bootstrap resampling, chrF++ of langkit against base on the same segments (p < 0.05: "
                  "a difference unlikely to be chance):", "", "| direction | base | langkit | p |", "|---|---:|---:|---:|"]
        for p in paired:
            lines.append(f"| {p['direction']} | {_fmt(p['baseline'])} | {_fmt(p['system'])} | {p['p_value']:.4f} |")
            signatures.setdefault("chrF++ paired bootstrap", p["signature"])
    lines += ["", "Signatures (sacrebleu):", ""]
    lines += [f"- {label}: `{sig}`" for label, sig in signatures.items()]
    if report["model"] == "tiny":
        lines += ["", "**These scores come from `tiny`, a randomly initialised 2-layer model: they are meaningless "
                  "and only show that the pipeline runs end to end.**"]
    lines += ["", "Every hypothesis, reference and source is in `outputs/` (one segment per line), e.g. "
              "`sacrebleu outputs/langkit.SRC-TGT.ref -i outputs/langkit.SRC-TGT.hyp -m chrf --chrf-word-order 2`.",
              ""]
    return "\n".join(lines)


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    atomic_write_text(path, "".join(f"{one_line(line)}\n" for line in lines))


def evaluate_system(
    system: str,
    model: Any,
    tokenizer: Any,
    directions: Sequence[Direction],
    out_dir: Path,
    *,
    max_new_tokens: int,
    batch_size: int,
    task: Task,
    normalize: Callable[[str, str], str] | None = None,
) -> tuple[list[dict[str, Any]], list[Translation]]:
    """Translate every direction with one system, write its outputs/ files, score them. ``normalize``
    ((text, language) -> text) is applied to the outputs before scoring: the references went through the
    corpus stage's normalization, and an output should not lose chrF for an apostrophe variant or a
    decomposed accent that the reference lost there. ``.hyp`` holds what was scored (so that sacrebleu's
    command line gives the same scores), ``.gen`` the outputs as the model wrote them, which judges see."""
    results, translations = [], []
    for d in directions:
        hyps = [one_line(h) for h in translate(model, tokenizer, d.source_language, d.target_language, d.sources,
                                               max_new_tokens=max_new_tokens, batch_size=batch_size)]
        scored = [normalize(h, d.target_language) for h in hyps] if normalize else hyps
        stem = out_dir / "outputs" / f"{system}.{d.name}"
        for suffix, lines in (("src", d.sources), ("gen", hyps), ("hyp", scored), ("ref", d.references)):
            _write_lines(stem.with_name(f"{stem.name}.{suffix}"), lines)
        metrics = score(scored, d.references, metrics=task.metrics, bootstrap=task.bootstrap)
        log.info("%s %s (n=%d): %s", system, d.name, len(hyps),
                 ", ".join(f"{k} {v['score']:.2f}" for k, v in metrics.items()))
        results.append({"system": system, "direction": d.name, "source_language": d.source_language,
                        "target_language": d.target_language, "n": len(hyps), "metrics": metrics})
        translations += [Translation(system, d.name, d.source_language, d.target_language, i, s, h, r, scored=c)
                         for i, s, h, r, c in zip(d.test_ids, d.sources, hyps, d.references, scored, strict=True)]
    return results, translations


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


def _to_device(model: Any) -> Any:
    import torch

    if torch.cuda.is_available() and next(model.parameters()).device.type == "cpu":
        model = model.to("cuda")
    return model


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _corpus_normalization(run_dir: RunDir, cfg: RunConfig) -> Any:
    """The normalization settings the corpus stage built the references with (``corpus/stats.json`` records
    them), else the config's: outputs must go through the same rules as their references."""
    from langkit.config import NormalizeConfig

    stats = run_dir.corpus / "stats.json"
    recorded = (read_json(stats).get("steps") or {}).get("normalize") if stats.is_file() else None
    if not isinstance(recorded, dict):
        return cfg.corpus.normalize
    known = {f.name for f in dataclasses.fields(NormalizeConfig)}
    return NormalizeConfig(**{k: v for k, v in recorded.items() if k in known})


def run(cfg: RunConfig, run_dir: RunDir, task: Task | None = None) -> Path:
    """The eval stage: translate the test split with each system, score, write the reports and the
    blinded human-evaluation sheet into ``run_dir.eval``. Returns that folder."""
    task = task or default_task()
    split = run_dir.require(run_dir.split(task.split), "corpus")
    run_dir.require(run_dir.adapter_weights, "train")
    run_dir.require(run_dir.tokenizer_file, "tokenizer")
    directions = load_directions(split, cfg.languages, cfg.eval.max_items, task)
    if not directions:
        raise ValueError(f"{split} holds no aligned pairs for {', '.join(cfg.languages)}: nothing to evaluate")

    def load_langkit() -> tuple[Any, Any]:
        from langkit.train import load_adapted_model  # lazily: train.py pulls in the training stack

        return load_adapted_model(run_dir, cfg)  # type: ignore[no-any-return]

    def load_base() -> tuple[Any, Any]:
        from langkit.models import load_base_model
        from langkit.tokenizer import load_base_tokenizer

        return load_base_model(cfg.train.model, cfg.train.dtype, seed=cfg.train.seed), load_base_tokenizer(cfg.tokenizer.base)

    systems: list[tuple[str, Callable[[], tuple[Any, Any]]]] = [("langkit", load_langkit)]
    if cfg.eval.compare_base:
        systems.append(("base", load_base))

    normalize_config = _corpus_normalization(run_dir, cfg)

    def normalize_output(text: str, language: str) -> str:
        from langkit.corpus.normalize import normalize_text  # the rules the references went through

        return normalize_text(text, language, normalize_config)[0]

    out_dir = run_dir.eval
    out_dir.mkdir(parents=True, exist_ok=True)
    results, translations = [], []
    for system, load in systems:
        log.info("evaluating %s on %d direction(s)", system, len(directions))
        model, tokenizer = load()
        model = _to_device(model)
        r, t = evaluate_system(system, model, tokenizer, directions, out_dir, max_new_tokens=cfg.eval.max_new_tokens,
                               batch_size=cfg.eval.batch_size, task=task, normalize=normalize_output)
        results += r
        translations += t
        del model, tokenizer  # one system in memory at a time
        gc.collect()

    # langkit against the base model on the same segments, direction by direction (the outputs as scored).
    paired = []
    if cfg.eval.compare_base and task.bootstrap > 1:
        for d in directions:
            if len(d.references) < 2:
                continue  # one segment: every resample is the same
            base, langkit = ([t.scored for t in translations if t.system == system and t.direction == d.name]
                             for system in ("base", "langkit"))
            paired.append({"direction": d.name, "baseline_system": "base", "compared_system": "langkit",
                           **paired_test(base, langkit, d.references, n_samples=task.bootstrap)})

    report = {
        "model": cfg.train.model,
        "adapter": _rel(run_dir.adapter, run_dir.root),
        # what was scored, so that publishing can tell these scores from a later adapter's or tokenizer's
        "adapter_sha256": sha256_file(run_dir.adapter_weights),
        "tokenizer_sha256": sha256_file(run_dir.tokenizer_file),
        "test_set": _rel(split, run_dir.root),
        "results": results,
        "paired": paired,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "languages": list(cfg.languages),
        "systems": {
            "langkit": {"model": cfg.train.model, "adapter": _rel(run_dir.adapter, run_dir.root),
                        "tokenizer": _rel(run_dir.tokenizer, run_dir.root)},
            **({"base": {"model": cfg.train.model, "adapter": None, "tokenizer": cfg.tokenizer.base}}
               if cfg.eval.compare_base else {}),
        },
        "scoring": {"outputs": "normalized by the corpus stage's rules for the target language, as the references "
                               "are: outputs/*.hyp hold them as scored, outputs/*.gen as generated"},
        "generation": {"decoding": "greedy", "max_new_tokens": cfg.eval.max_new_tokens,
                       "batch_size": cfg.eval.batch_size, "stop_tokens": list(STOP_TOKENS), "max_items": cfg.eval.max_items},
        "task": dataclasses.asdict(task),
    }
    write_json(run_dir.report, report)
    atomic_write_text(out_dir / "report.md", report_markdown(report))
    write_human_eval(translations, out_dir, seed=cfg.eval.seed)
    log.info("wrote %s, report.md and human_eval.csv/.xlsx (%d items)", run_dir.report, len(translations))
    return out_dir
