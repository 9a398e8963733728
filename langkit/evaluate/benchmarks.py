"""Standard test sets as task files (``eval/*.yaml``): FLORES-200, NTREX-128, MAFAND-MT, TICO-19, or any
aligned files a user supplies (the only way to score Baoulé: no public benchmark has it).

A benchmark file names where its text is in the set's *published* layout, relative to a data folder the
user gives (``--data DIR``), and which directions to score by default::

    name: flores200-devtest
    format: lines                      # lines: one text file per language, aligned line by line
    files: "flores200_dataset/devtest/{code}.devtest"
    codes: {eng_Latn: eng_Latn, wol_Latn: wol_Latn}   # langkit code -> the set's own code
    directions: [eng_Latn-wol_Latn, wol_Latn-eng_Latn]

``format: tsv`` reads one file per language pair (``{pair}`` in ``files``, folder or file name from
``pairs``) with a header row and the two languages in ``columns``. ``hub`` names a Hugging Face dataset
read through ``datasets`` instead of local files (used when no ``--data`` is given; with
``HF_HUB_OFFLINE=1`` it reads only what the local cache holds). :func:`load_benchmark_directions`
refuses a file that is missing or not aligned, naming the file and its line count.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from langkit.evaluate.tasks import Direction, one_line
from langkit.languages import LANGUAGES, get_language
from langkit.utils import get_logger

log = get_logger("evaluate")

BENCHMARK_DIR = Path(__file__).resolve().parents[2] / "eval"
"""Where the benchmark task files of this checkout are (``eval/*.yaml``)."""
FORMATS = ("lines", "tsv")


class TaskError(ValueError):
    """A benchmark task file or its data that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Benchmark:
    """One standard test set and the directions scored on it. See the module docstring for the keys."""

    name: str
    """Short id used in file names and tables, e.g. ``flores200-devtest``."""
    title: str = ""
    """Human name, e.g. ``FLORES-200 devtest``."""
    catalog: str = ""
    """Id of its card in ``corpora/sources/`` (licence, citation)."""
    format: str = "lines"
    files: str = ""
    """Path template under the data folder: ``{code}`` is the set's code for a language, ``{pair}`` the
    folder/file name of a language pair (``pairs``)."""
    codes: dict[str, str] = field(default_factory=dict)
    """langkit code (``wol_Latn``) -> the set's code for it in ``files`` (``wol``, ``ref.wol``...)."""
    pairs: dict[str, str] = field(default_factory=dict)
    """``src_Latn-tgt_Latn`` -> the pair's name in ``files`` (``fr-wol``); either order of a pair matches."""
    columns: tuple[str, ...] = ()
    """tsv: the header names of the pair key's first and second language's column."""
    hub: dict[str, str] = field(default_factory=dict)
    """``dataset``, ``config`` (may hold ``{code}``), ``split``, ``column``: a Hub copy with one config per language."""
    directions: tuple[str, ...] = ()
    """Default directions, ``src-tgt`` in langkit codes."""
    license: str = ""
    citation: str = ""
    notes: str = ""
    path: str = ""
    """The task file it was read from (not a key of the file)."""

    def direction_pairs(self, only: Sequence[str] = ()) -> list[tuple[str, str]]:
        names = list(only) or list(self.directions)
        pairs = []
        for name in names:
            src, _, tgt = name.partition("-")
            for code in (src, tgt):
                if code not in LANGUAGES:
                    raise TaskError(f"{self.path or self.name}: unknown language code {code!r} in direction {name!r}; "
                                    f"known: {', '.join(LANGUAGES)}")
                if code not in self.codes:
                    raise TaskError(f"{self.path or self.name}: {code} is not in this benchmark (it has "
                                    f"{', '.join(self.codes)})")
            pairs.append((src, tgt))
        return pairs


_KEYS = {f.name for f in dataclasses.fields(Benchmark)} - {"path"}


def benchmark_files(folder: str | Path = BENCHMARK_DIR) -> dict[str, Path]:
    """Benchmark task files of a folder by name (``translation.yaml``, the run stage's task, is not one)."""
    found = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        if path.name == "translation.yaml":
            continue
        found[path.stem] = path
    return found


def load_benchmark(name_or_path: str | Path) -> Benchmark:
    """A benchmark by name (a file in ``eval/``) or by path; unknown keys, codes and formats are errors."""
    path = Path(name_or_path)
    if not path.suffix:
        known = benchmark_files()
        if str(name_or_path) not in known:
            raise TaskError(f"unknown benchmark {name_or_path!r}; known: {', '.join(known) or 'none'} "
                            "(or give the path of a task file)")
        path = known[str(name_or_path)]
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise TaskError(f"benchmark task file not found: {path}") from None
    except yaml.YAMLError as err:
        raise TaskError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise TaskError(f"{path}: a benchmark task must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise TaskError(f"{path}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(_KEYS))}")
    for key in ("directions", "columns"):
        if key in data:
            if not isinstance(data[key], list):
                raise TaskError(f"{path}: {key} must be a list")
            data[key] = tuple(str(v) for v in data[key])
    for key in ("codes", "pairs", "hub"):
        if key in data and not isinstance(data[key], dict):
            raise TaskError(f"{path}: {key} must be a mapping")
        data[key] = {str(k): str(v) for k, v in (data.get(key) or {}).items()}
    if "name" not in data:
        data["name"] = path.stem
    bench = Benchmark(**data, path=str(path))
    problems = []
    if bench.format not in FORMATS:
        problems.append(f"format must be one of {', '.join(FORMATS)}, got {bench.format!r}")
    if not bench.files and not bench.hub:
        problems.append("give files (a path template) or hub (a dataset id)")
    if bench.format == "tsv" and len(bench.columns) != 2:
        problems.append("format tsv needs columns: [first language's column, second language's column]")
    problems += [f"unknown language code {c!r} in codes (known: {', '.join(LANGUAGES)})"
                 for c in bench.codes if c not in LANGUAGES]
    for key in bench.pairs:
        if any(c not in LANGUAGES for c in key.split("-")) or key.count("-") != 1:
            problems.append(f"pairs key {key!r} must be src-tgt in langkit codes, e.g. fra_Latn-wol_Latn")
    if problems:
        raise TaskError(f"{path}: " + "; ".join(problems))
    bench.direction_pairs()  # the default directions name known codes
    return bench


# --------------------------------------------------------------------------------------------------
# Reading the text
# --------------------------------------------------------------------------------------------------


def _pair_name(bench: Benchmark, src: str, tgt: str) -> tuple[str, bool]:
    """The pair's name in ``files`` and whether (src, tgt) is in the key's order."""
    if f"{src}-{tgt}" in bench.pairs:
        return bench.pairs[f"{src}-{tgt}"], True
    if f"{tgt}-{src}" in bench.pairs:
        return bench.pairs[f"{tgt}-{src}"], False
    if "{pair}" in bench.files:
        raise TaskError(f"{bench.path}: no pair {src}-{tgt} in pairs ({', '.join(bench.pairs) or 'none'})")
    return "", True


def _file(bench: Benchmark, data: Path, code: str, pair: str) -> Path:
    return data / bench.files.format(code=bench.codes[code], pair=pair)


def read_segments(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, one segment each (a final newline ends the last line, CRLF accepted).
    Missing: FileNotFoundError; not UTF-8: :class:`TaskError` naming the line."""
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise TaskError(f"{path}, line {line}: not valid UTF-8 ({err.reason})") from None
    # split on \n only: a U+2028 inside a segment must not shift every line after it
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _read_tsv(path: Path, columns: tuple[str, ...]) -> tuple[list[str], list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise TaskError(f"{path}: no column {', '.join(missing)} (header: {', '.join(reader.fieldnames or [])})")
        first, second = [], []
        for number, row in enumerate(reader, start=2):
            a, b = row.get(columns[0]), row.get(columns[1])
            if a is None or b is None:
                raise TaskError(f"{path}, line {number}: fewer fields than the header")
            first.append(a)
            second.append(b)
    return first, second


def _read_hub(bench: Benchmark, code: str) -> list[str]:
    import datasets

    hub = bench.hub
    config = hub.get("config", "").format(code=bench.codes[code]) or None
    try:
        dataset = datasets.load_dataset(hub["dataset"], config, split=hub.get("split", "test"))
    except Exception as err:  # offline without a cached copy, a gated dataset...
        raise TaskError(f"{bench.path}: cannot read {hub['dataset']} ({config}) from the Hub or its local cache: "
                        f"{err}. Download the set and give its folder with --data") from None
    return [str(t) for t in dataset[hub.get("column", "text")]]


def load_benchmark_directions(bench: Benchmark, data: str | Path | None, *, only: Sequence[str] = (),
                              limit: int = 0) -> list[Direction]:
    """The directions of a benchmark with their aligned text: sources and references read from ``data``
    (the set's folder, in its published layout) or, without it, from the Hub copy. ``limit`` > 0 keeps the
    first segments only. Missing or misaligned files are refused, naming files and line counts."""
    if data is None and not bench.hub:
        raise TaskError(f"{bench.path}: {bench.name} has no Hub copy configured: give its folder with --data")
    if data is not None and not bench.files:
        raise TaskError(f"{bench.path}: {bench.name} names no files; read it from the Hub (no --data)")
    directions = []
    files: dict[Path, list[str]] = {}  # a language in several directions is read once
    hub_texts: dict[str, list[str]] = {}
    for src, tgt in bench.direction_pairs(only):
        if data is None:
            texts = {code: hub_texts.get(code) or hub_texts.setdefault(code, _read_hub(bench, code))
                     for code in (src, tgt)}
            where = {code: f"{bench.hub['dataset']} ({bench.codes[code]})" for code in (src, tgt)}
        elif bench.format == "tsv":
            pair, in_order = _pair_name(bench, src, tgt)
            path = _file(bench, Path(data), src, pair)
            first, second = _read_tsv(path, bench.columns)
            texts = {src: first, tgt: second} if in_order else {src: second, tgt: first}
            where = {src: str(path), tgt: str(path)}
        else:
            pair, _ = _pair_name(bench, src, tgt)
            paths = {code: _file(bench, Path(data), code, pair) for code in (src, tgt)}
            texts = {code: files.get(path) or files.setdefault(path, read_segments(path)) for code, path in paths.items()}
            where = {code: str(path) for code, path in paths.items()}
        if len(texts[src]) != len(texts[tgt]):
            raise TaskError(f"{bench.name} {src}-{tgt}: not line-aligned: {where[src]} has {len(texts[src])} lines, "
                            f"{where[tgt]} has {len(texts[tgt])}")
        if not texts[src]:
            raise TaskError(f"{bench.name} {src}-{tgt}: {where[src]} holds no segments")
        empty = [i + 1 for i in range(len(texts[src])) if not texts[src][i].strip() or not texts[tgt][i].strip()]
        if empty:
            raise TaskError(f"{bench.name} {src}-{tgt}: empty segment at line(s) {', '.join(map(str, empty[:10]))} of "
                            f"{where[src]} / {where[tgt]} (a misaligned file?)")
        n = min(limit, len(texts[src])) if limit else len(texts[src])
        ids = [f"{bench.name}:{i + 1}" for i in range(n)]  # the segment's line in the set
        directions.append(Direction(src, tgt, ids, [one_line(t) for t in texts[src][:n]],
                                    [one_line(t) for t in texts[tgt][:n]], total=len(texts[src])))
    return directions


def describe(bench: Benchmark) -> dict[str, Any]:
    """What results.json records of a benchmark: enough to find the same files again."""
    return {"name": bench.name, "title": bench.title, "task_file": bench.path, "catalog": bench.catalog,
            "license": bench.license, "format": bench.format, "files": bench.files, "hub": dict(bench.hub) or None}


def language_name(code: str) -> str:
    return get_language(code).english_name
