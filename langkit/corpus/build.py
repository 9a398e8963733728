"""Build the corpus: read the sources, normalize, drop, split, write the dataset and its counts.

Each record is read once and ends in exactly one place: kept (then in one split), dropped (with a
reason, in ``dropped.jsonl``) or quarantined (malformed input, with file, line and reason, in
``quarantine.jsonl``); ``read == kept + dropped + quarantined`` is checked for every source.

A well-formed record goes through, in order: normalization by its language's rules (the pivot text by
the pivot's rules, :mod:`langkit.corpus.normalize`), personal-data scrubbing of both texts
(:mod:`langkit.corpus.pii`), then the drops: ``empty``, the quality filters
(:mod:`langkit.corpus.filters`), language identification (``langid:CODE``, :mod:`langkit.corpus.langid`)
``duplicate`` (same language, text and pivot as a record kept before) and ``near_duplicate`` (MinHash
similarity to a record kept before, in any source of the language; the dropped record names it in
``duplicate_of``; :mod:`langkit.corpus.dedup`). The ids of the rules and PII types that touched a
record are stored with it (the ``normalization`` column; ``pivot:`` for the pivot text), and counted
per language in ``stats.json`` with before/after samples of each rule.

Once every source is read, each language's kept records are split (:func:`held_out`; the records of a
source declared ``split: test`` or ``dev`` all go to that split, and such sources are merged first, so a
training record that repeats one of them is the one dropped as a duplicate), and the train split is
decontaminated: a training record whose text or pivot overlaps a dev or test text of
any language, or a segment of ``corpus.dedup.decontaminate_against``, moves from kept to dropped
(``decontaminated``, with the overlapping words and where they come from). The held-out splits are
chosen before that filter, so dev and test keep their sizes. A split left empty fails the build with the
counts (:class:`EmptySplitError`), unless the config asked for it to be empty.

Two phases, so that the work spreads over cores and machines and memory stays flat:

1. Per source (:mod:`langkit.corpus.shards`): read to langid, plus the exact-duplicate digest and the
   MinHash signature of every record that reaches the dedup steps, into a shard under ``.work/``
   (written atomically, named by a hash of what it depends on). Sources run in a process pool
   (``workers``), one per scheduler job (``only_source``), or on datatrove's executors
   (:mod:`langkit.corpus.executors`).
2. The merge, per language (the dedup indexes of a language are its own): the language's shards
   replayed in source order, each as soon as it is written, a chunk of records at a time, in Arrow
   columns (:func:`decide_chunk`: exact duplicates against 8-byte digests in sorted arrays,
   near-duplicates against the compact LSH index of :mod:`langkit.corpus.stores`, signatures in a
   file; only the rows that depend on earlier rows of their chunk are decided one by one), kept
   records appended to a parquet spool per language under ``.work/merge/``, dropped and quarantined
   ones to a file per source. With more than one worker every language runs in a process of its own,
   at the same time as the per-source phase. Then, in the main process: the files per source joined
   in order, the split (only the pair numbers are held), the training records checked against the
   evaluation texts (by the worker processes, in pieces), and the splits streamed from the spools
   into the parquet files, row group by row group.

What the merge holds in memory therefore grows by about 290 bytes per kept record (the dedup
indexes), not by the records themselves. A killed build resumes from its finished shards, the output
does not depend on the number of workers or on the executor.
"""

from __future__ import annotations

import functools
import importlib
import os
import pickle
import random
import shutil
import tempfile
import threading
import time
from array import array
from collections import Counter
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from langkit.config import (
    EXECUTORS,
    DedupConfig,
    FilterConfig,
    LangIdConfig,
    NormalizeConfig,
    PiiConfig,
    SourceConfig,
)
from langkit.corpus.card import write_dataset_card
from langkit.corpus.dedup import Decontaminator, Match, NearDuplicateIndex
from langkit.corpus.filters import FILTER_REASONS
from langkit.corpus.licences import check_eval_sources, check_release, resolve_sources
from langkit.corpus.normalize import FLAGS, RULES, Normalizer
from langkit.corpus.pii import PLACEHOLDERS
from langkit.corpus.readers import check_source, source_name
from langkit.corpus.shards import (
    CRASH_ENV,
    WORK_DIR,
    Steps,
    atomic_file,
    read_report,
    run_sources,
    shard_batches,
    shard_path,
    signature_path,
    string_array,
    umask_mode,
    worker_pool,
    write_jsonl_line,
)
from langkit.corpus.stores import DigestSet
from langkit.utils import get_logger, write_json

__all__ = ["COLUMNS", "CRASH_ENV", "DROP_REASONS", "SPLITS", "WORK_DIR", "EmptySplitError", "Example", "build_corpus",
           "held_out", "write_split"]  # fmt: skip

log = get_logger("corpus")

SPLITS = ("train", "dev", "test")
DROP_REASONS = ("empty", *FILTER_REASONS, "duplicate", "near_duplicate", "decontaminated")
"""Drop reasons always counted (as 0 when unused); ``langid:CODE`` reasons are added as they occur."""
COLUMNS = (
    "id", "language", "text", "pivot_language", "pivot_text", "source", "license", "file", "line",
    "normalization",
)  # fmt: skip
"""The columns of every split, in order; ``line`` is an int, ``normalization`` a list of str (the ids
of the normalization rules, flags and PII types that touched the record, ``pivot:`` ones for the pivot
text, e.g. ``["apostrophe", "pii:phone", "pivot:space"]``), every other column a str."""
ROW_GROUP_SIZE = 100_000
"""Rows per parquet row group of the splits (fixed, so the same rows always give the same file)."""
SPOOL_ROWS = 16_384
"""Rows per row group of the merge's kept-record spools, and per batch read back from them."""
MERGE_CHUNK = 8_192
"""Shard records the merge decides together: one vectorized lookup in the dedup indexes per chunk."""
PAIR_LIMIT = 16
"""Similar-pair candidates per chunk row above which a chunk's rows are decided one at a time."""
MERGE_DIR = "merge"
"""Under ``.work/``: the merge's spools and signature files (redone when a build is re-run)."""


@dataclass(slots=True)
class Example:
    """A kept record with its provenance: one row of a split."""

    id: str
    language: str
    text: str
    pivot_language: str
    pivot_text: str
    source: str
    license: str
    file: str
    line: int
    normalization: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in COLUMNS}


def _schema() -> Any:
    import pyarrow as pa

    types = {"line": pa.int64(), "normalization": pa.list_(pa.string())}
    return pa.schema([(name, types.get(name, pa.string())) for name in COLUMNS])


class ParquetRows:
    """One parquet file with the split schema, written in row groups of exactly ``group_rows`` rows
    (the last one shorter) whatever the sizes of the pieces appended, under a temporary name renamed
    into place by :meth:`close`. Holds at most about one row group.

    An empty file has no row group at all: a zero-row group makes datasets' parquet reader ask pyarrow
    for batches of size 0, which fails. Same rows, same bytes: fixed row-group size and options, no
    timestamp (the writer's version string is the only metadata, fixed by the pinned pyarrow)."""

    def __init__(self, path: Path, group_rows: int = ROW_GROUP_SIZE, compression: str = "snappy") -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.group_rows = group_rows
        self.rows = 0
        self._schema = _schema()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        self._writer = pq.ParquetWriter(self._tmp, self._schema, compression=compression, write_statistics=True)
        self._columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        self._tables: list[Any] = []
        self._buffered = 0

    def append(self, values: Sequence[Any]) -> None:
        """One row: its values in :data:`COLUMNS` order."""
        for column, value in zip(self._columns.values(), values, strict=True):
            column.append(value)
        if len(self._columns["id"]) >= self.group_rows:
            self._columns_to_table()

    def append_table(self, table: Any) -> None:
        """Rows as a pyarrow table (or record batch) with the split schema."""
        if len(self._columns["id"]):
            self._columns_to_table()
        if table.num_rows:
            self._tables.append(table)
            self._buffered += table.num_rows
            self._write(final=False)

    def _columns_to_table(self) -> None:
        import pyarrow as pa

        table = pa.Table.from_pydict(self._columns, schema=self._schema)
        self._columns = {name: [] for name in COLUMNS}
        self._tables.append(table)
        self._buffered += table.num_rows
        self._write(final=False)

    def _write(self, final: bool) -> None:
        import pyarrow as pa

        if self._buffered < self.group_rows and not (final and self._buffered):
            return
        table = pa.concat_tables(
            [t if isinstance(t, pa.Table) else pa.Table.from_batches([t]) for t in self._tables]
        )
        whole = self._buffered if final else self._buffered - self._buffered % self.group_rows
        self._writer.write_table(table.slice(0, whole), row_group_size=self.group_rows)
        self.rows += whole
        rest = table.slice(whole)
        self._tables = [rest] if rest.num_rows else []
        self._buffered = rest.num_rows

    def close(self) -> None:
        """Write what is left, sync, and rename the file into place."""
        if len(self._columns["id"]):
            self._columns_to_table()
        self._write(final=True)
        self._writer.close()
        with open(self._tmp, "rb") as f:
            os.fsync(f.fileno())
        umask_mode(self._tmp)
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        Path(self._tmp).unlink(missing_ok=True)


def write_split(path: Path, examples: Iterable[Example]) -> int:
    """Write one split as parquet with the fixed schema, atomically; return the rows written."""
    out = ParquetRows(path)
    try:
        for e in examples:
            out.append((e.id, e.language, e.text, e.pivot_language, e.pivot_text, e.source, e.license, e.file,
                        e.line, e.normalization))  # fmt: skip
        out.close()
    except BaseException:
        out.abort()
        raise
    return out.rows


_RULE_ORDER = {rule: i for i, rule in enumerate([*RULES, *FLAGS])}


def _merge_normalization(reports: list[dict[str, Any]], max_samples: int) -> dict[str, Any]:
    """One language's normalization report from its sources' reports, in source order: the same
    counts and the same first ``max_samples`` samples per rule as one Normalizer run over all of
    them in that order (what :meth:`Normalizer.report` gives)."""
    rules: Counter[str] = Counter()
    lookalikes: Counter[str] = Counter()
    samples: dict[str, list[dict[str, str]]] = {}
    for report in reports:
        rules.update(report["rules"])
        lookalikes.update(report["lookalikes"])
        for rule, pairs in report["samples"].items():
            kept = samples.setdefault(rule, [])
            kept.extend(pairs[: max(0, max_samples - len(kept))])
    order = sorted(rules, key=lambda r: _RULE_ORDER.get(r, len(_RULE_ORDER)))
    return {
        "texts": sum(r["texts"] for r in reports),
        "changed": sum(r["changed"] for r in reports),
        "rules": {r: rules[r] for r in order},
        "lookalikes": dict(sorted(lookalikes.items())),
        "samples": {r: samples[r] for r in order if r in samples},
    }


@dataclass
class _LanguageSteps:
    """The merge's state for the sources of one target language: the exact and near-duplicate
    indexes, the spool of kept records and the numbers of the kept pairs, the per-source reports."""

    language: str
    merge_dir: Path
    dedup: DedupConfig = field(default_factory=DedupConfig)
    seen: DigestSet = field(init=False, default_factory=DigestSet)
    near_duplicates: NearDuplicateIndex | None = field(init=False, default=None)
    near_duplicate_samples: list[dict[str, Any]] = field(init=False, default_factory=list)
    reports: list[dict[str, Any]] = field(init=False, default_factory=list)
    kept: int = field(init=False, default=0)
    pairs: array = field(init=False, default_factory=lambda: array("q"))  # kept numbers of the pairs
    assigned: dict[str, array] = field(init=False, default_factory=dict)
    """Split name -> kept numbers of the records of sources declared ``split: dev`` / ``test``."""
    spool: ParquetRows | None = field(init=False)
    spool_path: Path = field(init=False)
    indexed: int = field(init=False, default=0)
    """Records in the near-duplicate index (set by :meth:`close`)."""

    def __post_init__(self) -> None:
        self.spool_path = self.merge_dir / f"kept-{self.language}.parquet"
        # Uncompressed: a file written once and read back at once, by this machine.
        self.spool = ParquetRows(self.spool_path, SPOOL_ROWS, compression="none")
        if self.dedup.near_duplicates:
            d = self.dedup
            # One index per language: near-duplicates are found within and across its sources.
            self.near_duplicates = NearDuplicateIndex(
                d.threshold, d.num_perm, d.bands, d.shingle, d.shingle_unit, d.min_words, d.seed,
                signature_file=self.merge_dir / f"signatures-{self.language}.bin",
            )  # fmt: skip

    def keep(self, table: Any, split: str = "") -> None:
        """Kept records, in order: a pyarrow table with the split schema (a pair has a pivot text)."""
        n = table.num_rows
        if split:
            self.assigned.setdefault(split, array("q")).extend(range(self.kept, self.kept + n))
        else:
            paired = _nonempty(table.column("pivot_text"))
            self.pairs.extend((self.kept + np.flatnonzero(paired)).tolist())
        self.spool.append_table(table)  # type: ignore[union-attr]
        self.kept += n

    def near_duplicate(self, key: str, text: str, pivot: str, match: Match | None) -> None:
        """Keep the first ``dedup.samples`` near-duplicate pairs for the report."""
        if match is not None and len(self.near_duplicate_samples) < self.dedup.samples:
            self.near_duplicate_samples.append(
                {"similarity": match.similarity, "dropped_id": key, "dropped": text, "dropped_pivot": pivot,
                 "kept_id": match.key, "kept": "", "kept_pivot": ""}
            )  # fmt: skip

    def close(self) -> None:
        """Finish the spool and drop the dedup indexes: what is left is small, and pickles (a
        language merged in a process of its own returns it)."""
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        if self.near_duplicates is not None:
            self.indexed = len(self.near_duplicates)
            self.near_duplicates.close()
            self.near_duplicates = None
        self.seen = DigestSet()

    def stats(self) -> dict[str, Any]:
        max_samples = Normalizer.max_samples
        pivots: dict[str, list[dict[str, Any]]] = {}
        pii: Counter[str] = Counter({kind: 0 for kind in PLACEHOLDERS})
        for report in self.reports:
            for code, r in report["pivot_normalization"].items():
                pivots.setdefault(code, []).append(r)
            pii.update(report["pii"])
        empty = Normalizer(self.language).report()
        stats = {
            "normalization": _merge_normalization(
                [r["normalization"] for r in self.reports] or [empty], max_samples
            ),
            "pivot_normalization": {
                code: _merge_normalization(rs, max_samples) for code, rs in pivots.items()
            },
            "pii": dict(pii),
        }
        if self.dedup.near_duplicates:
            stats["near_duplicates"] = {
                "indexed": self.indexed,
                "samples": self.near_duplicate_samples,
            }
        return stats


def held_out(
    pairs: Sequence[int], language: str, dev_size: int, test_size: int, seed: int
) -> tuple[set[int], set[int]]:
    """The numbers (among a language's kept records) of the dev and test records: ``test_size`` then
    ``dev_size`` of the aligned ``pairs`` (their numbers, in order), chosen by a seeded shuffle. The
    rest (other pairs and all monolingual text) is train."""
    order = array("q", pairs)
    # A string seed is hashed with SHA-512 by random.Random: stable across runs and Python versions,
    # and different per language so the languages' held-out choices are not correlated.
    random.Random(f"{seed}:{language}").shuffle(order)  # type: ignore[arg-type]
    if len(order) < dev_size + test_size:
        log.warning(
            "%s: only %d aligned pairs for test_size=%d + dev_size=%d; test gets %d, dev gets %d",
            language,
            len(order),
            test_size,
            dev_size,
            min(test_size, len(order)),
            max(0, min(dev_size, len(order) - test_size)),
        )
    return set(order[test_size : test_size + dev_size]), set(order[:test_size])


def _choose_held_out(steps: _LanguageSteps, dev_size: int, test_size: int, seed: int) -> tuple[set[int], set[int]]:
    """A language's dev and test numbers: a split that has sources declared for it (``split: dev`` /
    ``test``) is exactly their records; any other is drawn by :func:`held_out` from the remaining pairs."""
    dev_fixed, test_fixed = steps.assigned.get("dev", array("q")), steps.assigned.get("test", array("q"))
    dev, test = held_out(
        steps.pairs, steps.language, 0 if "dev" in steps.assigned else dev_size,
        0 if "test" in steps.assigned else test_size, seed,
    )  # fmt: skip
    return dev | set(dev_fixed), test | set(test_fixed)


class EmptySplitError(ValueError):
    """A build left a split empty that the config did not ask to be empty."""


def plan_shards(
    sources: list[SourceConfig],
    languages: list[str],
    steps: Steps,
    out_dir: Path,
    release: bool = True,
    allow_restricted: bool = False,
    allow_eval_sources: bool = False,
) -> tuple[list[SourceConfig], dict[str, Path]]:
    """The sources a build reads (those of ``languages``, licences resolved, checked) and the shard
    each one writes under ``out_dir/.work/``. Raises before anything is read: licences (filled from the
    catalogue cards, gated when the corpus is meant for ``release``), evaluation sets to be trained on
    (cards marked ``eval_only``, unless declared ``split: test``/``dev`` or ``allow_eval_sources``),
    files, columns, aligned lengths, names, the decontamination files."""
    selected: list[SourceConfig] = []
    for i, source in enumerate(sources):
        source.check(f"corpus.sources[{i}]")
        if source.language in languages:
            selected.append(source)
        else:
            log.info(
                "skipping source %s: language %s is not in this run's languages",
                source_name(source),
                source.language,
            )
    # Fail before reading anything, not after an hour on the first sources.
    selected = resolve_sources(selected)
    check_release(selected, release, allow_restricted)
    check_eval_sources(selected, allow_eval_sources)
    for source in selected:
        check_source(source)
    names = Counter(source_name(s) for s in selected)
    if clash := sorted(n for n, count in names.items() if count > 1):
        raise ValueError(
            f"corpus sources share a name ({', '.join(clash)}); set distinct `name`s (they prefix the ids)"
        )
    if steps.dedup.decontaminate:
        for i, path in enumerate(steps.dedup.decontaminate_against):
            if not Path(path).is_file():
                raise FileNotFoundError(f"corpus.dedup.decontaminate_against[{i}]: no such file: {path}")
    work_dir = Path(out_dir) / WORK_DIR
    return selected, {source_name(s): shard_path(work_dir, s, steps) for s in selected}


def build_corpus(
    sources: list[SourceConfig],
    languages: list[str],
    out_dir: Path,
    dev_size: int,
    test_size: int,
    seed: int,
    release: bool = True,
    allow_restricted: bool = False,
    normalization: NormalizeConfig | None = None,
    pii: PiiConfig | None = None,
    filters: FilterConfig | None = None,
    langid: LangIdConfig | None = None,
    dedup: DedupConfig | None = None,
    workers: int = 0,
    only_source: str = "",
    executor: str = "local",
    allow_eval_sources: bool = False,
    allow_empty: Sequence[str] = (),
) -> dict[str, Any]:
    """Read ``sources`` (those whose language is in ``languages``), write into ``out_dir``:
    ``dataset/{train,dev,test}.parquet``, ``stats.json``, ``dropped.jsonl`` and ``quarantine.jsonl``,
    and the dataset card ``dataset/README.md`` with its ``dataset/plots/*.png``. With ``release`` (a
    corpus meant for publication), non-commercial and no-redistribution sources are refused before
    anything is read, unless ``allow_restricted``. ``normalization``, ``pii``, ``filters``, ``langid``
    and ``dedup`` configure the per-record steps (their defaults when None).

    The per-record steps of each source run ``workers`` sources at a time (0: one per core; 1: in this
    process, and so does the whole build), in a process pool (``executor="local"``) or on datatrove's
    local executor (``"datatrove"``), each writing a shard under ``out_dir/.work/`` named by a hash of the source,
    its file's size and time, the step configs and langkit's version. A build killed part-way and run
    again reuses the finished shards and redoes the rest, so it finishes with the same output as an
    uninterrupted one; a build that finishes removes them. With ``only_source`` (a source name) only
    that source's shard is written: one job per source on a scheduler, then one build without it to
    merge. Every file is written under a temporary name and renamed into place. With more than one
    worker the languages are merged by a second pool of up to ``workers`` processes, each as soon as
    its shards are written (see the module docstring).

    A source whose catalogue card marks it as an evaluation set is refused unless declared ``split:
    test``/``dev`` or ``allow_eval_sources``. A split left empty raises :class:`EmptySplitError` with the
    counts (``stats.json``, ``dropped.jsonl`` and ``quarantine.jsonl`` are written, the split files are
    not), unless it is in ``allow_empty`` or asked for (``dev_size`` / ``test_size`` 0 and no source
    declared for it); the shards are kept, so the rerun only merges.
    Returns the stats written to ``stats.json``."""
    if executor not in EXECUTORS:
        raise ValueError(f"corpus.executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    out_dir = Path(out_dir)
    dedup = dedup or DedupConfig()
    steps = Steps(
        normalization or NormalizeConfig(), pii or PiiConfig(), filters or FilterConfig(), langid or LangIdConfig(),
        dedup,
    )  # fmt: skip
    selected, shards = plan_shards(sources, languages, steps, out_dir, release, allow_restricted, allow_eval_sources)
    work_dir = out_dir / WORK_DIR
    if only_source:
        if only_source not in shards:
            raise ValueError(f"--only-source {only_source}: no such source (have: {', '.join(shards)})")
        selected = [s for s in selected if source_name(s) == only_source]
    if executor == "datatrove":
        try:
            from langkit.corpus.executors import run_sources_datatrove
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "corpus.executor datatrove needs datatrove: pip install 'langkit[datatrove]'"
            ) from e

        run_sources_datatrove(selected, shards, steps, workers, work_dir)
        ready: Iterator[str] = iter([source_name(s) for s in _merge_order(selected)])
    else:
        # The merge order, so that the merge replays the first shards while the pool writes the others.
        ready = run_sources(_merge_order(selected), shards, steps, workers)
    if only_source:
        for _ in ready:
            pass
        log.info(
            "source %s: shard %s written; run the build without --only-source to merge",
            only_source,
            shards[only_source],
        )
        return {"shard": str(shards[only_source])}
    try:
        # Languages merged in parallel unless the build was asked to use one process.
        parallel = workers > 1 or (workers == 0 and (os.cpu_count() or 1) > 1)
        result = _merge(selected, shards, languages, out_dir, dev_size, test_size, seed, steps, ready, allow_empty,
                        workers or os.cpu_count() or 1 if parallel else 0)  # fmt: skip
    finally:
        if isinstance(ready, Generator):
            ready.close()  # a merge that failed stops the pool
    _clean_work_dir(work_dir)
    return result


def _merge_order(sources: list[SourceConfig]) -> list[SourceConfig]:
    """The order the merge replays the sources in: those declared ``split: test``/``dev`` first (against
    an evaluation set, the training record is the duplicate to drop), then the config's order."""
    return sorted(sources, key=lambda s: not s.split)  # stable: the config's order within each group


def _merge(
    selected: list[SourceConfig],
    shards: dict[str, Path],
    languages: list[str],
    out_dir: Path,
    dev_size: int,
    test_size: int,
    seed: int,
    steps: Steps,
    ready: Iterable[str],
    allow_empty: Sequence[str] = (),
    processes: int = 0,
) -> dict[str, Any]:
    """The global steps over the shards, in :func:`_merge_order`: ``ready`` yields the name of each
    source, in that order, once its shard is written. With ``processes`` (0: none, all in this one),
    a pool of that many (at least 2) merges the languages (its dedup indexes are each language's own),
    when more than one has sources, and checks the decontamination. Writes every output."""
    # A merge killed part-way leaves its temporary files next to the outputs (atomic writes rename them
    # into place only when whole): remove them, so that a rerun leaves exactly an uninterrupted build's files.
    for stale in out_dir.rglob(".*.tmp"):
        if WORK_DIR not in stale.relative_to(out_dir).parts and stale.is_file():
            stale.unlink()
    merge_dir = out_dir / WORK_DIR / MERGE_DIR
    shutil.rmtree(merge_dir, ignore_errors=True)  # a killed merge's leftovers: the merge is redone
    merge_dir.mkdir(parents=True)
    order = _merge_order(selected)
    jobs = {language: [(k, s, shards[source_name(s)]) for k, s in enumerate(order) if s.language == language]
            for language in languages}  # fmt: skip
    busy = sum(bool(j) for j in jobs.values())
    if processes:
        # The card's plotting library, imported while this process mostly waits for the pools
        # (half a second less at the end, when nothing else runs).
        threading.Thread(target=importlib.import_module, args=("matplotlib.figure",), daemon=True).start()
    dedup = steps.dedup
    # At most one process per language with sources, and two at least: the decontamination uses them too.
    with worker_pool(max(2, min(busy, processes))) if processes else nullcontext() as pool:
        state, source_stats = _dedup_sources(pool, selected, order, jobs, languages, merge_dir, dedup, ready)
        with (
            atomic_file(out_dir / "dropped.jsonl") as dropped_file,
            atomic_file(out_dir / "quarantine.jsonl") as quarantine_file,
        ):
            # Each source's dropped and quarantined records, in the merge's order of sources.
            for k in range(len(order)):
                for part, out in (("dropped", dropped_file), ("quarantine", quarantine_file)):
                    with open(merge_dir / f"{part}-{k}.jsonl", encoding="utf-8") as f:
                        shutil.copyfileobj(f, out)
            # The held-out pairs are chosen first, then the train split is filtered against them (and the
            # other evaluation texts): dev and test keep their sizes, and dropped.jsonl is still open.
            chosen = {language: _choose_held_out(state[language], dev_size, test_size, seed) for language in languages}
            decontaminator = _held_out_pass(state, chosen, dedup)
            overlaps = _find_overlaps(state, chosen, decontaminator, merge_dir, pool)
            counts, removed = _write_splits(state, chosen, overlaps, out_dir / "dataset", source_stats, dropped_file)
    if decontaminator is not None:
        log.info(
            "decontamination: %d evaluation segments; %d training records removed (%s)",
            len(decontaminator),
            sum(removed.values()),
            ", ".join(f"{name} {n}" for name, n in removed.items()) or "none",
        )
    for st in source_stats:
        if st["read"] != st["kept"] + sum(st["dropped"].values()) + st["quarantined"]:  # pragma: no cover
            raise RuntimeError(f"corpus source {st['name']}: read != kept + dropped + quarantined: {st}")

    language_stats: dict[str, Any] = {}
    totals = dict.fromkeys(SPLITS, 0)
    for language in languages:
        kept, pairs, per_split = counts[language]
        if not kept:
            log.warning("%s: no text kept from any source", language)
        for name in SPLITS:
            totals[name] += per_split[name]
        own = [st for st in source_stats if st["language"] == language]
        dropped = Counter({reason: 0 for reason in DROP_REASONS})
        for st in own:
            dropped.update(st["dropped"])
        language_stats[language] = {
            "read": sum(st["read"] for st in own),
            "kept": kept,
            "dropped": dict(dropped),
            "quarantined": sum(st["quarantined"] for st in own),
            "pairs": pairs,
            "monolingual": kept - pairs,
            "splits": per_split,
            **state[language].stats(),
        }
    encodings = Counter(st["encoding"] for st in source_stats if st.get("encoding"))
    result = {
        "languages": language_stats,
        "sources": source_stats,
        "encodings": dict(sorted(encodings.items())),  # sources read in each encoding
        "splits": totals,
        "steps": {
            "normalize": asdict(steps.normalize),
            "pii": asdict(steps.pii),
            "filters": asdict(steps.filters),
            "langid": asdict(steps.langid),
            "dedup": asdict(dedup),
        },
    }
    write_json(out_dir / "stats.json", result)
    declared = {s.split for s in selected if s.split}
    asked = {name for name, size in (("dev", dev_size), ("test", test_size)) if size == 0 and name not in declared}
    if empty := [name for name in SPLITS if not totals[name] and name not in {*allow_empty, *asked}]:
        for name in SPLITS:  # not a dataset: nothing downstream may take it for one
            (out_dir / "dataset" / f"{name}.parquet").unlink(missing_ok=True)
        raise EmptySplitError(_empty_split_message(empty, totals, language_stats, out_dir))
    write_dataset_card(out_dir, result)
    log.info("corpus written to %s: %s", out_dir, ", ".join(f"{n} {totals[n]}" for n in SPLITS))
    return result


def _dedup_sources(
    pool: Any,
    selected: list[SourceConfig],
    order: list[SourceConfig],
    jobs: dict[str, list[tuple[int, SourceConfig, Path]]],
    languages: list[str],
    merge_dir: Path,
    dedup: DedupConfig,
    ready: Iterable[str],
) -> tuple[dict[str, _LanguageSteps], list[dict[str, Any]]]:
    """The dedup steps over every source's shard (``order``: the merge's order of ``selected``; ``jobs``:
    each language's sources in it, with their numbers and shards), on the processes of ``pool`` when
    more than one language has sources, else in this process as ``ready`` yields them. Returns each
    language's closed state and the sources' counts in the config's order."""
    if pool is not None and sum(bool(j) for j in jobs.values()) > 1:
        state, merged = _merge_languages_in_processes(pool, jobs, merge_dir, dedup, ready, MERGE_CHUNK)
    else:
        state = {language: _LanguageSteps(language, merge_dir, dedup) for language in languages}
        shard_of = {k: shard for j in jobs.values() for k, _, shard in j}
        merged = {}
        for k, (_, source) in enumerate(zip(ready, order, strict=True)):
            merged[k] = _merge_source(state[source.language], k, source, shard_of[k], merge_dir, MERGE_CHUNK)
        for language_steps in state.values():
            language_steps.close()
    position = {source_name(s): i for i, s in enumerate(selected)}
    source_stats: list[dict[str, Any]] = [{} for _ in selected]
    for k, source in enumerate(order):
        source_stats[position[source_name(source)]] = merged[k]
    return state, source_stats


def _empty_split_message(empty: list[str], totals: dict[str, int], language_stats: dict[str, Any],
                         out_dir: Path) -> str:
    lines = []
    for language, st in language_stats.items():
        dropped = ", ".join(f"{reason} {n}" for reason, n in st["dropped"].items() if n) or "none"
        lines.append(f"{language}: read {st['read']}, kept {st['kept']} ({st['pairs']} aligned pairs), dropped "
                     f"{sum(st['dropped'].values())} ({dropped}), quarantined {st['quarantined']}")
    hints = []
    if "train" in empty:
        hints.append("every kept record went to dev/test or was dropped: add text, lower corpus.dev_size/test_size")
    if {"dev", "test"} & set(empty):
        hints.append("dev and test are drawn from aligned pairs (text with a pivot): the sources gave too few")
    return (f"corpus: the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty (splits: "
            + ", ".join(f"{n} {totals[n]}" for n in SPLITS) + "); " + "; ".join(lines) + ". "
            + "; ".join(hints) + f". The counts are in {out_dir / 'stats.json'}, the records in dropped.jsonl and "
            f"quarantine.jsonl. If the split should be empty, say so: corpus.allow_empty: [{', '.join(empty)}]")


KEEP, DUPLICATE, NEAR_DUPLICATE = 0, 1, 2
"""The merge's verdicts on a record that reached the dedup steps."""


def _nonempty(column: Any) -> np.ndarray:
    """[n] bool: which strings of a pyarrow string column are not empty."""
    import pyarrow.compute as pc

    return np.asarray(pc.greater(pc.binary_length(column), 0).to_numpy(zero_copy_only=False), dtype=bool)


def decide_chunk(
    seen: DigestSet,
    index: NearDuplicateIndex | None,
    keys: Sequence[str],
    digests: np.ndarray,
    signed: np.ndarray,
    sigs: np.ndarray,
    short: np.ndarray,
) -> tuple[np.ndarray, dict[int, Match]]:
    """The dedup verdicts on a chunk of records, in order, each against the records kept before it
    (earlier chunks and earlier rows of this one), and the kept ones added to ``seen`` and ``index``:
    what deciding them one at a time would give, with the Python work only where the chunk's rows
    depend on each other.

    ``keys`` ([m] record ids), ``digests`` ([m] uint64, :func:`shards.record_digest`), ``signed``
    ([m] bool: which have a MinHash signature), ``sigs`` ([signed, num_perm]) and ``short``
    ([signed] bool). Returns the [m] int8 verdicts (:data:`KEEP`, :data:`DUPLICATE`,
    :data:`NEAR_DUPLICATE`) and the match of each near-duplicate, by row."""
    m = len(digests)
    verdict = np.zeros(m, dtype=np.int8)
    matches: dict[int, Match] = {}
    earlier = seen.contains_flushed(digests)  # the same text kept in an earlier chunk
    verdict[earlier] = DUPLICATE
    _, inverse, counts = np.unique(digests, return_inverse=True, return_counts=True)
    # Rows decided in order below: the same text twice in the chunk, or a row similar to an earlier row
    # of the chunk. Every other row depends only on earlier chunks: decided here at once.
    ordered = (counts[inverse] > 1) & ~earlier
    signed_rows = np.flatnonzero(signed)  # the chunk row of each signature
    signature_of = np.full(m, -1, dtype=np.int64)
    signature_of[signed_rows] = np.arange(len(signed_rows))
    similar: dict[int, list[tuple[int, float]]] = {}
    if index is not None and len(signed_rows):
        band_keys = index.band_keys(sigs)
        best, best_similarity = index.match_flushed(sigs, short, band_keys)
        pairs = index.similar_pairs(sigs, short, band_keys, limit=PAIR_LIMIT * len(sigs))
        if pairs is None:  # many copies of one text: the index searches its pending records itself
            return _decide_one_at_a_time(seen, index, keys, digests, earlier, signature_of, sigs, short, band_keys,
                                         best, best_similarity)  # fmt: skip
        before, after, similarity = pairs  # sorted by the later row, then the earlier
        ordered[signed_rows[after]] = True
        ordered &= ~earlier
        near = (best >= 0) & ~ordered[signed_rows] & ~earlier[signed_rows]
        for r in np.flatnonzero(near).tolist():
            matches[int(signed_rows[r])] = Match(index.key(int(best[r])), float(best_similarity[r]))
        verdict[signed_rows[near]] = NEAR_DUPLICATE
        for i, j, sim in zip(before.tolist(), after.tolist(), similarity.tolist(), strict=True):
            similar.setdefault(j, []).append((i, sim))
    kept_digests: set[int] = set()  # of the rows decided in order
    for row in np.flatnonzero(ordered).tolist():
        digest = int(digests[row])
        if digest in kept_digests:
            verdict[row] = DUPLICATE
            continue
        s = int(signature_of[row])
        if s >= 0 and index is not None:
            # The most similar kept earlier row of the chunk (the earliest of equals), unless a record of
            # an earlier chunk is at least as similar.
            record, sim = -1, 0.0
            for i, pair_similarity in similar.get(s, ()):
                at = int(signed_rows[i])
                if verdict[at] == KEEP and (record < 0 or pair_similarity > sim):
                    record, sim = at, pair_similarity
            if best[s] >= 0 and (record < 0 or best_similarity[s] >= sim):
                matches[row] = Match(index.key(int(best[s])), float(best_similarity[s]))
            elif record >= 0:
                matches[row] = Match(keys[record], sim)
            if row in matches:
                verdict[row] = NEAR_DUPLICATE
                continue
        kept_digests.add(digest)
    kept = verdict == KEEP
    seen.add_many(digests[kept])
    if index is not None and len(signed_rows):
        rows = np.flatnonzero(kept[signed_rows])
        index.add_signatures([keys[i] for i in signed_rows[rows].tolist()], sigs[rows], short[rows], band_keys[rows])
    return verdict, matches


def _decide_one_at_a_time(
    seen: DigestSet,
    index: NearDuplicateIndex,
    keys: Sequence[str],
    digests: np.ndarray,
    earlier: np.ndarray,
    signature_of: np.ndarray,
    sigs: np.ndarray,
    short: np.ndarray,
    band_keys: np.ndarray,
    best: np.ndarray,
    best_similarity: np.ndarray,
) -> tuple[np.ndarray, dict[int, Match]]:
    """:func:`decide_chunk` for a chunk with too many similar pairs to list (many copies of one text):
    each row in turn, the index searching the records pending since its last flush."""
    verdict = np.where(earlier, DUPLICATE, KEEP).astype(np.int8)
    matches: dict[int, Match] = {}
    sharing = index.sharing_rows(band_keys).tolist()
    for row in np.flatnonzero(~earlier).tolist():
        digest = int(digests[row])
        if seen.in_pending(digest):
            verdict[row] = DUPLICATE
            continue
        s = int(signature_of[row])
        if s >= 0:
            flushed = (int(best[s]), float(best_similarity[s]))
            match = index.check_and_add_signature(keys[row], sigs[s], bool(short[s]), band_keys[s], flushed,
                                                  alone=not sharing[s])  # fmt: skip
            if match is not None:
                verdict[row], matches[row] = NEAR_DUPLICATE, match
                continue
        seen.add(digest)
    return verdict, matches


def _merge_source(
    steps: _LanguageSteps, k: int, source: SourceConfig, shard: Path, merge_dir: Path, chunk: int
) -> dict[str, Any]:
    """:func:`_merge_one` for the ``k``-th source of the merge, its dropped and quarantined records
    into ``merge_dir`` (``dropped-K.jsonl``, ``quarantine-K.jsonl``; joined in order at the end)."""
    with (
        atomic_file(merge_dir / f"dropped-{k}.jsonl") as dropped_file,
        atomic_file(merge_dir / f"quarantine-{k}.jsonl") as quarantine_file,
    ):
        return _merge_one(source, shard, steps, dropped_file, quarantine_file, chunk, merge_dir / MERGE_STOP)


MERGE_STOP = "STOP"
"""Under the merge folder: written when a source failed, so that the language merges waiting for
shards stop."""


def _merge_language(
    language: str, jobs: list[tuple[int, SourceConfig, Path]], merge_dir: Path, dedup: DedupConfig, chunk: int
) -> tuple[_LanguageSteps, dict[int, dict[str, Any]]]:
    """One language's merge, in a process of its own: its sources in the merge's order, each as soon
    as its shard exists (shards are renamed into place whole). Returns the closed state and the
    sources' counts by merge number."""
    steps = _LanguageSteps(language, merge_dir, dedup)
    merged = {}
    for k, source, shard in jobs:
        while not shard.is_file():
            if (merge_dir / MERGE_STOP).exists():  # (a killed build: the pool's workers exit with it)
                raise RuntimeError(f"{language} merge stopped: a source failed")
            time.sleep(0.02)
        merged[k] = _merge_source(steps, k, source, shard, merge_dir, chunk)
    steps.close()
    return steps, merged


def _merge_languages_in_processes(
    pool: Any,
    jobs: dict[str, list[tuple[int, SourceConfig, Path]]],
    merge_dir: Path,
    dedup: DedupConfig,
    ready: Iterable[str],
    chunk: int,
) -> tuple[dict[str, _LanguageSteps], dict[int, dict[str, Any]]]:
    """The languages' merges on the processes of ``pool``, while ``ready`` (the per-source phase) runs
    in this one; the language whose first source comes first starts first. A failed source stops
    them, and a failed language merge stops the build without waiting for the other sources."""
    busy = sorted((j[0][0], language) for language, j in jobs.items() if j)
    futures = {language: pool.submit(_merge_language, language, jobs[language], merge_dir, dedup, chunk)
               for _, language in busy}  # fmt: skip
    try:
        for _ in ready:
            for future in futures.values():
                if future.done() and future.exception() is not None:
                    future.result()  # raises it
        results = {language: future.result() for language, future in futures.items()}
    except BaseException:
        (merge_dir / MERGE_STOP).touch()
        pool.shutdown(cancel_futures=True)
        raise
    state = {}
    merged: dict[int, dict[str, Any]] = {}
    for language, j in jobs.items():
        if j:
            state[language], counts = results[language]
            merged.update(counts)
        else:  # no source: an empty state, closed
            state[language] = _LanguageSteps(language, merge_dir, dedup)
            state[language].close()
    return state, merged


def _merge_one(
    source: SourceConfig,
    shard: Path,
    steps: _LanguageSteps,
    dropped_file: IO[str],
    quarantine_file: IO[str],
    chunk_rows: int = MERGE_CHUNK,
    stop: Path | None = None,
) -> dict[str, Any]:
    """Replay one source's shard, ``chunk_rows`` records at a time, into its language's spool
    (dropping exact and near duplicates of records kept before, in any source of the language),
    writing its dropped and quarantined records; return its counts. The chunk stays in Arrow columns:
    only the records written to ``dropped.jsonl`` or ``quarantine.jsonl`` become Python objects. A file
    ``stop`` that appears (another part of the build failed) ends it between two chunks."""
    import pyarrow as pa
    import pyarrow.compute as pc

    name = source_name(source)
    language = source.language
    pivot_language = source.pivot_language if source.pivot_field or source.pivot_path else ""
    read = quarantined = n_kept = 0
    dropped = Counter({reason: 0 for reason in DROP_REASONS})
    index = steps.near_duplicates
    num_perm = steps.dedup.num_perm
    report = read_report(shard)
    encoding = report.pop("encoding", "")
    steps.reports.append(report)
    schema = _schema()
    with open(signature_path(shard), "rb") if index is not None else nullcontext() as sig_file:
        for batch in shard_batches(shard):
            for lo in range(0, batch.num_rows, chunk_rows):
                if stop is not None and stop.exists():
                    raise RuntimeError(f"{name}: merge stopped: another part of the build failed")
                chunk = batch.slice(lo, chunk_rows)
                n = chunk.num_rows
                read += n
                lines = chunk.column("line").to_numpy()
                error = _nonempty(chunk.column("error"))
                given = _nonempty(chunk.column("reason"))  # dropped by a per-record step
                rows = np.flatnonzero(~error & ~given)  # the records that reach the dedup steps
                signed = chunk.column("sig").to_numpy()[rows] == 1 if index is not None else np.zeros(len(rows), bool)
                k = int(signed.sum())
                sigs = np.zeros((0, num_perm), dtype=np.uint32)
                if k:
                    data = sig_file.read(4 * num_perm * k)  # type: ignore[union-attr]
                    if len(data) != 4 * num_perm * k:
                        raise ValueError(f"{signature_path(shard)}: {len(data)} bytes where the shard {shard.name} "
                                         f"needs {4 * num_perm * k} more; delete both and build again")
                    sigs = np.frombuffer(data, dtype="<u4").reshape(k, num_perm)
                short = chunk.column("short").to_numpy()[rows][signed] == 1
                keys = [f"{name}:{line}" for line in lines[rows].tolist()]
                verdict, matches = decide_chunk(
                    steps.seen, index, keys, chunk.column("digest").to_numpy()[rows], signed, sigs, short
                )
                outcome = np.full(n, KEEP, dtype=np.int8)
                outcome[rows] = verdict
                # Quarantined and dropped records, in order, written out (their own files: the order of
                # each file is the order of the records).
                out = np.flatnonzero(error | given | (outcome != KEEP))
                if len(out):
                    picked = chunk.take(pa.array(out))
                    columns = {c: picked.column(c).to_pylist() for c in ("error", "raw", "text", "pivot", "tags",
                                                                          "reason")}  # fmt: skip
                    near_of = {int(rows[p]): match for p, match in matches.items()}  # by chunk row
                    for i, (row, line) in enumerate(zip(out.tolist(), lines[out].tolist(), strict=True)):
                        if columns["error"][i]:
                            quarantined += 1
                            write_jsonl_line(quarantine_file, {"source": name, "file": source.path, "line": line,
                                                               "reason": columns["error"][i], "raw": columns["raw"][i]})  # fmt: skip
                            continue
                        text, pivot = columns["text"][i], columns["pivot"][i]
                        near = near_of.get(row)
                        reason = columns["reason"][i] or ("duplicate" if outcome[row] == DUPLICATE else "near_duplicate")
                        if near is not None:
                            steps.near_duplicate(f"{name}:{line}", text, pivot, near)
                        dropped[reason] += 1
                        record = {"source": name, "file": source.path, "line": line, "reason": reason, "text": text,
                                  "pivot_text": pivot, "normalization": columns["tags"][i]}  # fmt: skip
                        if near is not None:
                            record.update(duplicate_of=near.key, similarity=near.similarity)
                        write_jsonl_line(dropped_file, record)
                steps.seen.flush()
                if index is not None:
                    index.flush()
                kept = np.flatnonzero(verdict == KEEP)
                if not len(kept):
                    continue
                taken = chunk.take(pa.array(rows[kept]))
                pivot = taken.column("pivot").cast(pa.string())
                m = len(kept)
                table = pa.Table.from_arrays(
                    [
                        string_array([keys[i] for i in kept.tolist()]),
                        string_array(language, m),
                        taken.column("text").cast(pa.string()),
                        pc.if_else(pc.greater(pc.binary_length(pivot), 0), pivot_language, ""),
                        pivot,
                        string_array(name, m),
                        string_array(source.license, m),
                        string_array(source.path, m),
                        taken.column("line"),
                        taken.column("tags").cast(schema.field("normalization").type),
                    ],
                    schema=schema,
                )
                steps.keep(table, source.split)
                n_kept += m
    if read != n_kept + sum(dropped.values()) + quarantined:  # pragma: no cover - a bug in langkit
        raise RuntimeError(
            f"corpus source {name}: read {read} != kept {n_kept} + dropped {dict(dropped)} + quarantined {quarantined}"
        )
    log.info(
        "%s (%s, %s): read %d, kept %d, dropped %s, quarantined %d",
        name,
        source.format,
        source.language,
        read,
        n_kept,
        ", ".join(f"{r} {n}" for r, n in dropped.items() if n) or "none",
        quarantined,
    )
    return {
        "name": name,
        "path": source.path,
        "format": source.format,
        **({"encoding": encoding} if encoding else {}),  # as read: UTF-8, CP1252... (line-based formats)
        "language": source.language,
        "pivot_language": pivot_language,
        "license": source.license,
        "redistribution": source.redistribution,
        "card": source.card,
        **({"split": source.split} if source.split else {}),  # declared held out: all of it in that split
        "read": read,
        "kept": n_kept,
        "dropped": dict(dropped),
        "quarantined": quarantined,
    }


def _spool_batches(steps: _LanguageSteps) -> Iterable[tuple[int, Any]]:
    """A language's kept records back from its spool: (number of the first, pyarrow record batch)."""
    import pyarrow.parquet as pq

    start = 0
    with pq.ParquetFile(steps.spool_path) as f:
        for batch in f.iter_batches(batch_size=SPOOL_ROWS):
            yield start, batch
            start += batch.num_rows


def _held_out_pass(
    state: dict[str, _LanguageSteps], chosen: dict[str, tuple[set[int], set[int]]], dedup: DedupConfig
) -> Decontaminator | None:
    """One pass over the spools for the few records needed whole before the splits are written: the
    dev and test records (the decontaminator's evaluation texts) and the kept side of the
    near-duplicate samples. Returns the decontaminator (None when decontamination is off)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    held: dict[str, dict[int, dict[str, Any]]] = {}
    for language, steps in state.items():
        dev, test = chosen[language]
        wanted_ids = pa.array(sorted({s["kept_id"] for s in steps.near_duplicate_samples}), type=pa.string())
        numbers = np.array(sorted(dev | test), dtype=np.int64)
        rows: dict[int, dict[str, Any]] = {}
        by_id: dict[str, dict[str, Any]] = {}
        with pq.ParquetFile(steps.spool_path) as f:
            start = 0
            for g in range(f.metadata.num_row_groups):
                size = f.metadata.row_group(g).num_rows
                local = numbers[(numbers >= start) & (numbers < start + size)] - start
                hits = np.zeros(0, dtype=np.int64)
                if len(wanted_ids):  # the ids alone first: a whole row group only where needed
                    ids = f.read_row_group(g, columns=["id"]).column("id")
                    hits = np.flatnonzero(pc.is_in(ids, value_set=wanted_ids).to_numpy(zero_copy_only=False))
                if len(local) or len(hits):
                    group = f.read_row_group(g)
                    for i, row in zip(local.tolist(), group.take(pa.array(local)).to_pylist(), strict=True):
                        rows[start + i] = row
                    for row in group.take(pa.array(hits, type=pa.int64())).to_pylist():
                        by_id[row["id"]] = row
                start += size
        held[language] = rows
        for sample in steps.near_duplicate_samples:
            if (row := by_id.get(sample["kept_id"])) is not None:
                sample.update(kept=row["text"], kept_pivot=row["pivot_text"])
    if not dedup.decontaminate:
        return None
    decontaminator = Decontaminator(dedup.ngram, dedup.decontaminate_min_words)
    for language, rows in held.items():
        dev, test = chosen[language]
        for name, split in (("dev", dev), ("test", test)):
            for number in sorted(split):
                row = rows[number]
                decontaminator.add(row["text"], f"{name}:{row['id']}")
                if row["pivot_text"]:
                    decontaminator.add(row["pivot_text"], f"{name}:{row['id']}:pivot")
    for path in dedup.decontaminate_against:
        decontaminator.add_file(path)
    return decontaminator


OVERLAP_GROUPS = 4
"""Spool row groups (of ``SPOOL_ROWS``) checked for contamination per task of the worker pool."""


def _find_overlaps(
    state: dict[str, _LanguageSteps],
    chosen: dict[str, tuple[set[int], set[int]]],
    decontaminator: Decontaminator | None,
    merge_dir: Path,
    pool: Any,
) -> dict[str, dict[int, tuple[str, str]]]:
    """Per language, the training records (by kept number) whose text or pivot overlaps an evaluation
    text, with the overlap (:meth:`Decontaminator.find`). With a ``pool``, the spools are checked in
    pieces of ``OVERLAP_GROUPS`` row groups by its processes, which load the decontaminator once from
    ``merge_dir``; without, here."""
    import pyarrow.parquet as pq

    found: dict[str, dict[int, tuple[str, str]]] = {language: {} for language in state}
    if decontaminator is None:
        return found
    tasks = []
    for language, steps in state.items():
        dev, test = chosen[language]
        held = np.array(sorted(dev | test), dtype=np.int64)
        with pq.ParquetFile(steps.spool_path) as f:
            sizes = [f.metadata.row_group(g).num_rows for g in range(f.metadata.num_row_groups)]
        start = 0
        for g in range(0, len(sizes), OVERLAP_GROUPS):
            rows = sum(sizes[g : g + OVERLAP_GROUPS])
            own = held[(held >= start) & (held < start + rows)]
            tasks.append((language, steps.spool_path, g, min(g + OVERLAP_GROUPS, len(sizes)), start, own))
            start += rows
    if pool is None:
        for language, *task in tasks:
            found[language].update(_overlaps_in(decontaminator, *task))
        return found
    path = merge_dir / "decontaminator.pickle"
    with atomic_file(path, "wb") as f:
        pickle.dump(decontaminator, f, protocol=pickle.HIGHEST_PROTOCOL)
    futures = [(language, pool.submit(_overlaps_in_task, path, *task)) for language, *task in tasks]
    for language, future in futures:
        found[language].update(future.result())
    return found


def _overlaps_in(
    decontaminator: Decontaminator, spool: Path, first: int, stop: int, start: int, held: np.ndarray
) -> dict[int, tuple[str, str]]:
    """The contaminated training records among row groups ``first`` to ``stop`` of a spool (their first
    row is kept number ``start``; ``held``: the dev and test numbers among them, not checked)."""
    import pyarrow.parquet as pq

    found: dict[int, tuple[str, str]] = {}
    with pq.ParquetFile(spool) as f:
        table = f.read_row_groups(list(range(first, stop)), columns=["text", "pivot_text"])
    texts = table.column("text").to_pylist()
    pivots = table.column("pivot_text").to_pylist()
    train = np.ones(len(texts), dtype=bool)
    train[held - start] = False
    for i in np.flatnonzero(train).tolist():
        overlap = decontaminator.find(texts[i])
        if overlap is None and pivots[i]:
            overlap = decontaminator.find(pivots[i])
        if overlap is not None:
            found[start + i] = overlap
    return found


@functools.lru_cache(maxsize=1)
def _load_decontaminator(path: Path, stamp: tuple[int, int]) -> Decontaminator:
    with open(path, "rb") as f:
        decontaminator: Decontaminator = pickle.load(f)
    return decontaminator


def _overlaps_in_task(path: Path, *task: Any) -> dict[int, tuple[str, str]]:
    """:func:`_overlaps_in` in a worker process, the decontaminator loaded once per process (and file:
    ``stamp`` keys it by size and time too)."""
    st = path.stat()
    return _overlaps_in(_load_decontaminator(path, (st.st_size, st.st_mtime_ns)), *task)


def _write_splits(
    state: dict[str, _LanguageSteps],
    chosen: dict[str, tuple[set[int], set[int]]],
    overlaps: dict[str, dict[int, tuple[str, str]]],
    dataset_dir: Path,
    source_stats: list[dict[str, Any]],
    dropped_file: IO[str],
) -> tuple[dict[str, tuple[int, int, dict[str, int]]], Counter[str]]:
    """Stream every language's spool into the three split files (languages in order, each in kept
    order), removing from train the records found to overlap an evaluation text (``overlaps``, by
    language and kept number, from :func:`_find_overlaps`): written to ``dropped_file`` and moved from
    kept to dropped in ``source_stats``. Returns, per language, the records kept, the pairs among them
    and the rows per split; and the records removed per source."""
    import pyarrow as pa

    outs = {name: ParquetRows(dataset_dir / f"{name}.parquet") for name in SPLITS}
    by_name = {s["name"]: s for s in source_stats}
    counts: dict[str, tuple[int, int, dict[str, int]]] = {}
    removed: Counter[str] = Counter()
    try:
        for language, steps in state.items():
            dev, test = chosen[language]
            held = np.array(sorted(dev | test), dtype=np.int64)
            contaminated = np.array(sorted(overlaps[language]), dtype=np.int64)
            per_split = dict.fromkeys(SPLITS, 0)
            lost_pairs = 0
            for start, batch in _spool_batches(steps):
                numbers = np.arange(start, start + batch.num_rows)
                train = ~np.isin(numbers, held)
                for name, chosen_numbers in (("dev", dev), ("test", test)):
                    mask = np.isin(
                        numbers, np.fromiter(chosen_numbers, dtype=np.int64, count=len(chosen_numbers))
                    )
                    if mask.any():
                        outs[name].append_table(batch.filter(pa.array(mask)))
                        per_split[name] += int(mask.sum())
                here = contaminated[(contaminated >= start) & (contaminated < start + batch.num_rows)]
                for number in here.tolist():
                    i = number - start
                    overlap = overlaps[language][number]
                    train[i] = False
                    row = batch.slice(i, 1).to_pylist()[0]
                    lost_pairs += bool(row["pivot_text"])
                    removed[row["source"]] += 1
                    stats = by_name[row["source"]]
                    stats["kept"] -= 1
                    stats["dropped"]["decontaminated"] += 1
                    write_jsonl_line(
                        dropped_file,
                        {"source": row["source"], "file": row["file"], "line": row["line"], "reason": "decontaminated",
                         "text": row["text"], "pivot_text": row["pivot_text"], "normalization": row["normalization"],
                         "overlap": overlap[0], "overlaps": overlap[1]},
                    )  # fmt: skip
                outs["train"].append_table(batch.filter(pa.array(train)))
                per_split["train"] += int(train.sum())
            kept = sum(per_split.values())
            counts[language] = (kept, len(steps.pairs) - lost_pairs, per_split)
        for out in outs.values():
            out.close()
    except BaseException:
        for out in outs.values():
            out.abort()
        raise
    return counts, removed


def _clean_work_dir(work_dir: Path) -> None:
    """After a full build, remove the shards (the outputs hold everything they did, and a large
    corpus would otherwise be on disk twice), the merge's spools and the temporary files of any run
    that was killed."""
    shutil.rmtree(work_dir, ignore_errors=True)
