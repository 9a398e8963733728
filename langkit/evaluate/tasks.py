"""What is translated: the eval stage's task file (eval/translation.yaml) and the run's aligned test pairs."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from langkit.evaluate.metrics import METRICS
from langkit.languages import get_language
from langkit.utils import atomic_write_text, get_logger

log = get_logger("evaluate")

DEFAULT_TASK_FILE = Path(__file__).resolve().parents[2] / "eval" / "translation.yaml"
"""The task definition in the repository; an installed wheel without it falls back to ``Task()``."""
DIRECTIONS = ("pivot-language", "language-pivot")

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
    total: int = 0
    """Segments in the whole test set when only the first ones are scored (``--limit``); 0: ``len(sources)``."""

    @property
    def name(self) -> str:
        return f"{self.source_language}-{self.target_language}"


def one_line(text: str) -> str:
    """A segment as one line of a text file (line breaks inside it become spaces)."""
    return _LINE_BREAKS.sub(" ", text).strip()


def write_lines(path: Path, lines: Sequence[str]) -> None:
    """Segments to a text file, one line each (atomically): what sacrebleu's command line reads."""
    atomic_write_text(path, "".join(f"{one_line(line)}\n" for line in lines))


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
