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

Once every source is read, each language's kept records are split (:func:`split_language`), and the
train split is decontaminated: a training record whose text or pivot overlaps a dev or test text of
any language, or a segment of ``corpus.dedup.decontaminate_against``, moves from kept to dropped
(``decontaminated``, with the overlapping words and where they come from). The held-out splits are
chosen before that filter, so dev and test keep their sizes.

The per-record steps (read to langid) need nothing from other sources: they run per source, in a
process pool, each into a shard under ``.work/`` (written atomically, named by a hash of what it
depends on). The global steps (duplicates, split, decontamination, outputs) then replay the shards in
source order. So a killed build resumes from its finished shards, the output does not depend on the
number of workers, and ``only_source`` lets a scheduler run one source per job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from langkit import __version__
from langkit.config import DedupConfig, FilterConfig, LangIdConfig, NormalizeConfig, PiiConfig, SourceConfig
from langkit.corpus.card import write_dataset_card
from langkit.corpus.dedup import Decontaminator, Match, NearDuplicateIndex
from langkit.corpus.filters import FILTER_REASONS, check_quality
from langkit.corpus.langid import LangIdFilter
from langkit.corpus.licences import check_release, resolve_sources
from langkit.corpus.normalize import FLAGS, RULES, Normalizer
from langkit.corpus.pii import PLACEHOLDERS, PiiScrubber
from langkit.corpus.readers import Record, check_source, read_source, source_name
from langkit.utils import get_logger, progress, write_json

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


@dataclass
class _SourceSteps:
    """The per-record steps of one source (normalize, scrub, filters, langid), with what they
    counted. They need no state shared between sources, so each source can run in its own process
    and write its results to a shard; the global steps then read the shards in source order."""

    language: str
    normalize: NormalizeConfig
    pii: PiiConfig
    filters: FilterConfig
    langid: LangIdFilter | None
    normalizer: Normalizer = field(init=False)
    pivot_normalizers: dict[str, Normalizer] = field(init=False, default_factory=dict)
    scrubber: PiiScrubber = field(init=False)

    def __post_init__(self) -> None:
        self.scrubber = PiiScrubber(self.pii)
        self.normalizer = Normalizer(self.language, self.normalize, redact=self._redactor())

    def _redactor(self) -> Any:
        # Samples of the normalization rules go into stats.json: scrub them with a scrubber of their
        # own, so that the record counts of self.scrubber stay exact.
        if not self.pii.enabled:
            return None
        scrubber = PiiScrubber(self.pii)
        return lambda text: scrubber(text)[0]

    def pivot_normalizer(self, pivot_language: str) -> Normalizer:
        if pivot_language not in self.pivot_normalizers:
            self.pivot_normalizers[pivot_language] = Normalizer(
                pivot_language, self.normalize, redact=self._redactor()
            )
        return self.pivot_normalizers[pivot_language]

    def process(self, raw_text: str, pivot_language: str, raw_pivot: str) -> tuple[str, str, list[str], str]:
        """Normalize and scrub one record; return its text, pivot text, tags and drop reason ("" to
        keep it, unless it is a duplicate)."""
        text, tags = self.normalizer(raw_text)
        pivot = ""
        if pivot_language:
            pivot, pivot_tags = self.pivot_normalizer(pivot_language)(raw_pivot)
            tags += [f"pivot:{tag}" for tag in pivot_tags]
        if self.pii.enabled:
            text, kinds = self.scrubber(text)
            tags += [f"pii:{kind}" for kind in kinds]
            if pivot:
                pivot, kinds = self.scrubber(pivot)
                tags += [f"pivot:pii:{kind}" for kind in kinds]
        if not text.strip():
            return text, pivot.strip(), tags, "empty"
        reason = check_quality(text, self.language, self.filters)
        if reason is None and self.langid is not None:
            reason = self.langid(text, self.language)
        return text, pivot.strip(), tags, reason or ""

    def report(self) -> dict[str, Any]:
        return {
            "normalization": self.normalizer.report(),
            "pivot_normalization": {code: n.report() for code, n in self.pivot_normalizers.items()},
            "pii": {kind: self.scrubber.counts[kind] for kind in PLACEHOLDERS},
        }


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
    """The global steps for the sources of one target language (the near-duplicate index), and the
    per-source reports merged."""

    language: str
    dedup: DedupConfig = field(default_factory=DedupConfig)
    near_duplicates: NearDuplicateIndex | None = field(init=False, default=None)
    near_duplicate_samples: list[dict[str, Any]] = field(init=False, default_factory=list)
    reports: list[dict[str, Any]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.dedup.near_duplicates:
            d = self.dedup
            # One index per language: near-duplicates are found within and across its sources.
            self.near_duplicates = NearDuplicateIndex(
                d.threshold, d.num_perm, d.bands, d.shingle, d.shingle_unit, d.min_words, d.seed
            )

    def near_duplicate(self, key: str, text: str, pivot: str) -> Match | None:
        """The id of the kept record this one near-duplicates and their similarity, or None (then it
        is indexed as kept); the first ``dedup.samples`` pairs are kept for the report."""
        if self.near_duplicates is None:
            return None
        match = self.near_duplicates.check_and_add(key, text, pivot)
        if match is None:
            return None
        if len(self.near_duplicate_samples) < self.dedup.samples:
            self.near_duplicate_samples.append(
                {"similarity": match.similarity, "dropped_id": key, "dropped": text, "dropped_pivot": pivot,
                 "kept_id": match.key, "kept": "", "kept_pivot": ""}
            )  # fmt: skip
        return match

    def resolve_samples(self, kept: list[Example]) -> None:
        """Fill in the kept side of the near-duplicate samples (one pass over the kept records, instead
        of a map from every id to its text held all along)."""
        wanted: dict[str, list[dict[str, Any]]] = {}
        for sample in self.near_duplicate_samples:
            wanted.setdefault(sample["kept_id"], []).append(sample)
        for example in kept:
            for sample in wanted.get(example.id, ()):
                sample.update(kept=example.text, kept_pivot=example.pivot_text)

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
        if self.near_duplicates is not None:
            stats["near_duplicates"] = {
                "indexed": len(self.near_duplicates),
                "samples": self.near_duplicate_samples,
            }
        return stats


def _dedup_key(language: str, text: str, pivot: str) -> bytes:
    # A 16-byte digest per kept record instead of the strings: the seen-set stays small.
    return hashlib.blake2b("\x00".join((language, text, pivot)).encode("utf-8"), digest_size=16).digest()


def _umask_mode(path: str) -> None:
    # mkstemp creates 0600 files; give the output the usual permissions (0666 less the umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextmanager
def _atomic_jsonl(path: Path) -> Iterator[IO[str]]:
    """A text file written line by line under a temporary name, renamed into place on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            # On disk before the rename: after a crash the name holds the whole file or nothing.
            f.flush()
            os.fsync(f.fileno())
        _umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_jsonl_line(f: IO[str], data: dict[str, Any]) -> None:
    f.write(json.dumps(data, ensure_ascii=False) + "\n")


ROW_GROUP_SIZE = 100_000
"""Rows per parquet row group (fixed, so the same rows always give the same file)."""
WORK_DIR = ".work"
"""Under the corpus folder: one finished shard per source (the per-record steps' results)."""
CRASH_ENV = "LANGKIT_TEST_CRASH_AFTER_SOURCE"
"""Test hook: with ``N`` set, the build exits at once (``os._exit(137)``, like a SIGKILL) after the
N-th source shard is written, to test that a re-run resumes and gives the same output."""


def _file_stamp(path: str) -> list[int] | None:
    # A changed input file must not reuse an old shard; size and mtime catch an edit without reading
    # the whole file again (a Hub id or a missing path has no stamp).
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _shard_path(
    work_dir: Path,
    source: SourceConfig,
    normalize: NormalizeConfig,
    pii: PiiConfig,
    filters: FilterConfig,
    langid: LangIdConfig,
) -> Path:
    """The shard of one source's per-record steps, named by a hash of everything its content depends
    on: the source config and files, the per-record step configs and langkit's version."""
    key = {
        "source": asdict(source),
        "stamps": [_file_stamp(source.path), _file_stamp(source.pivot_path) if source.pivot_path else None],
        "steps": [asdict(normalize), asdict(pii), asdict(filters), asdict(langid)],
        "langkit": __version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:20]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in source_name(source))
    return work_dir / f"{safe}-{digest}.jsonl"


def _process_source(
    source: SourceConfig,
    shard: Path,
    normalize: NormalizeConfig,
    pii: PiiConfig,
    filters: FilterConfig,
    langid: LangIdConfig,
) -> str:
    """Run the per-record steps over one source into its shard (a JSON line per record, in read
    order, then one with the steps' report); written atomically, so a shard that exists is whole."""
    langid_filter = LangIdFilter(langid) if langid.enabled else None
    steps = _SourceSteps(source.language, normalize, pii, filters, langid_filter)
    name = source_name(source)
    pivot_language = source.pivot_language if source.pivot_field or source.pivot_path else ""
    record: Record
    with _atomic_jsonl(shard) as f:
        for record in progress(read_source(source), desc=f"corpus: {name}"):
            if record.error:
                _write_jsonl_line(f, {"line": record.line, "error": record.error, "raw": record.raw})
                continue
            # A paired source's row with an empty pivot still gives monolingual text.
            text, pivot, tags, reason = steps.process(record.text, pivot_language, record.pivot_text)
            _write_jsonl_line(
                f, {"line": record.line, "text": text, "pivot": pivot, "tags": tags, "reason": reason}
            )
        _write_jsonl_line(f, {"report": steps.report()})
    return str(shard)


def _read_shard(shard: Path) -> Iterator[dict[str, Any]]:
    with open(shard, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def _run_sources(
    sources: list[SourceConfig],
    shards: dict[str, Path],
    normalize: NormalizeConfig,
    pii: PiiConfig,
    filters: FilterConfig,
    langid: LangIdConfig,
    workers: int,
) -> None:
    """Write the shards that are missing, ``workers`` sources at a time (0: one per core)."""
    todo = [s for s in sources if not shards[source_name(s)].is_file()]
    if len(todo) < len(sources):
        log.info("reusing %d finished source shard(s) in %s", len(sources) - len(todo), WORK_DIR)
    crash_after = int(os.environ.get(CRASH_ENV, "0") or 0)
    done = 0

    def finished(path: str) -> None:
        nonlocal done
        done += 1
        log.info("source shard written: %s", Path(path).name)
        if crash_after and done >= crash_after:
            _flush_logs()
            os._exit(137)

    n = min(workers or os.cpu_count() or 1, len(todo))
    if n <= 1:
        for source in todo:
            finished(_process_source(source, shards[source_name(source)], normalize, pii, filters, langid))
        return
    import multiprocessing

    # spawn, not fork: a forked child would inherit the parent's threads' locks (tqdm, logging).
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            pool.submit(_process_source, s, shards[source_name(s)], normalize, pii, filters, langid)
            for s in todo
        ]
        # Results are collected in source order; the shards are what matters, not the order they end.
        for future in futures:
            finished(future.result())


def _flush_logs() -> None:
    # os._exit skips the interpreter's shutdown: flush what was logged so the test can see it.
    for handler in logging.getLogger("langkit").handlers:
        handler.flush()
    sys.stderr.flush()


def _clean_work_dir(work_dir: Path) -> None:
    """After a full build, remove the shards (the outputs hold everything they did, and a large
    corpus would otherwise be on disk twice) and the temporary files of any run that was killed."""
    import shutil

    shutil.rmtree(work_dir, ignore_errors=True)


def write_split(path: Path, examples: list[Example]) -> None:
    """Write one split as parquet with the fixed schema, atomically (temp file, then os.replace)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"line": pa.int64(), "normalization": pa.list_(pa.string())}
    schema = pa.schema([(name, types.get(name, pa.string())) for name in COLUMNS])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # An empty split is written with no row group at all: a zero-row group makes datasets'
        # parquet reader ask pyarrow for batches of size 0, which fails.
        # Same rows, same bytes: fixed row-group size and options, no timestamp (parquet has none;
        # the writer's version string is the only metadata, fixed by the pinned pyarrow).
        with pq.ParquetWriter(tmp, schema, compression="snappy", write_statistics=True) as writer:
            if examples:
                table = pa.Table.from_pylist([e.row() for e in examples], schema=schema)
                writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def split_language(
    examples: list[Example], language: str, dev_size: int, test_size: int, seed: int
) -> dict[str, list[Example]]:
    """Hold out ``test_size`` then ``dev_size`` aligned pairs, chosen by a seeded shuffle; the rest
    (other pairs and all monolingual text) is train. Each split keeps the order records were read in."""
    pairs = [i for i, e in enumerate(examples) if e.pivot_text]
    # A string seed is hashed with SHA-512 by random.Random: stable across runs and Python versions,
    # and different per language so the languages' held-out choices are not correlated.
    random.Random(f"{seed}:{language}").shuffle(pairs)
    if len(pairs) < dev_size + test_size:
        log.warning(
            "%s: only %d aligned pairs for test_size=%d + dev_size=%d; test gets %d, dev gets %d",
            language,
            len(pairs),
            test_size,
            dev_size,
            min(test_size, len(pairs)),
            max(0, min(dev_size, len(pairs) - test_size)),
        )
    test = set(pairs[:test_size])
    dev = set(pairs[test_size : test_size + dev_size])
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for i, example in enumerate(examples):
        splits["test" if i in test else "dev" if i in dev else "train"].append(example)
    return splits


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
) -> dict[str, Any]:
    """Read ``sources`` (those whose language is in ``languages``), write into ``out_dir``:
    ``dataset/{train,dev,test}.parquet``, ``stats.json``, ``dropped.jsonl`` and ``quarantine.jsonl``,
    and the dataset card ``dataset/README.md`` with its ``dataset/plots/*.png``. With ``release`` (a
    corpus meant for publication), non-commercial and no-redistribution sources are refused before
    anything is read, unless ``allow_restricted``. ``normalization``, ``pii``, ``filters``, ``langid``
    and ``dedup`` configure the per-record steps (their defaults when None). Returns the stats written
    to ``stats.json``.

    The per-record steps of each source run first, ``workers`` sources at a time in a process pool
    (0: one per core; 1: in this process), each writing a shard under ``out_dir/.work/`` named by a
    hash of the source, its file's size and time, the step configs and langkit's version. A build killed
    part-way and run again reuses the finished shards and redoes the rest, so it finishes with the
    same output as an uninterrupted one; a build that finishes removes them. With ``only_source`` (a source name)
    only that source's shard is written: one job per source on a scheduler, then one build without it
    to merge. Every file is written under a temporary name and renamed into place.
    Returns the stats written to ``stats.json``."""
    out_dir = Path(out_dir)
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
    # Fail before reading anything, not after an hour on the first sources: licences (filled from the
    # catalogue cards, gated when the corpus is meant for release), files, columns, aligned lengths.
    selected = resolve_sources(selected)
    check_release(selected, release, allow_restricted)
    for source in selected:
        check_source(source)
    names = Counter(source_name(s) for s in selected)
    if clash := sorted(n for n, count in names.items() if count > 1):
        raise ValueError(
            f"corpus sources share a name ({', '.join(clash)}); set distinct `name`s (they prefix the ids)"
        )

    normalization = normalization or NormalizeConfig()
    pii = pii or PiiConfig()
    filters = filters or FilterConfig()
    langid = langid or LangIdConfig()
    dedup = dedup or DedupConfig()
    if dedup.decontaminate:
        for i, path in enumerate(dedup.decontaminate_against):
            if not Path(path).is_file():
                raise FileNotFoundError(f"corpus.dedup.decontaminate_against[{i}]: no such file: {path}")
    work_dir = out_dir / WORK_DIR
    shards = {source_name(s): _shard_path(work_dir, s, normalization, pii, filters, langid) for s in selected}
    if only_source:
        if only_source not in shards:
            raise ValueError(f"--only-source {only_source}: no such source (have: {', '.join(shards)})")
        selected = [s for s in selected if source_name(s) == only_source]
    _run_sources(selected, shards, normalization, pii, filters, langid, workers)
    if only_source:
        log.info(
            "source %s: shard %s written; run the build without --only-source to merge",
            only_source,
            shards[only_source],
        )
        return {"shard": str(shards[only_source])}

    steps = {language: _LanguageSteps(language, dedup) for language in languages}
    kept: dict[str, list[Example]] = {language: [] for language in languages}
    seen: set[bytes] = set()
    source_stats: list[dict[str, Any]] = []
    with (
        _atomic_jsonl(out_dir / "dropped.jsonl") as dropped_file,
        _atomic_jsonl(out_dir / "quarantine.jsonl") as quarantine_file,
    ):
        for source in selected:
            stats = _merge_one(
                source, shards[source_name(source)], kept[source.language], seen, dropped_file, quarantine_file,
                steps[source.language],
            )  # fmt: skip
            source_stats.append(stats)
        # The held-out pairs are chosen first, then the train split is filtered against them (and the
        # other evaluation texts): dev and test keep their sizes, and dropped.jsonl is still open.
        splits = {
            language: split_language(kept[language], language, dev_size, test_size, seed)
            for language in languages
        }
        for language in languages:
            steps[language].resolve_samples(kept[language])
        if dedup.decontaminate:
            removed = _decontaminate(splits, dedup, source_stats, dropped_file)
            for language in languages:
                kept[language] = [e for e in kept[language] if e.id not in removed]
    for s in source_stats:
        if s["read"] != s["kept"] + sum(s["dropped"].values()) + s["quarantined"]:  # pragma: no cover
            raise RuntimeError(f"corpus source {s['name']}: read != kept + dropped + quarantined: {s}")

    split_examples: dict[str, list[Example]] = {name: [] for name in SPLITS}
    language_stats: dict[str, Any] = {}
    for language in languages:
        examples = kept[language]
        if not examples:
            log.warning("%s: no text kept from any source", language)
        per_split = splits[language]
        for name in SPLITS:
            split_examples[name].extend(per_split[name])
        own = [s for s in source_stats if s["language"] == language]
        dropped = Counter({reason: 0 for reason in DROP_REASONS})
        for s in own:
            dropped.update(s["dropped"])
        pairs = sum(1 for e in examples if e.pivot_text)
        language_stats[language] = {
            "read": sum(s["read"] for s in own),
            "kept": len(examples),
            "dropped": dict(dropped),
            "quarantined": sum(s["quarantined"] for s in own),
            "pairs": pairs,
            "monolingual": len(examples) - pairs,
            "splits": {name: len(per_split[name]) for name in SPLITS},
            **steps[language].stats(),
        }

    for name in SPLITS:
        write_split(out_dir / "dataset" / f"{name}.parquet", split_examples[name])
    result = {
        "languages": language_stats,
        "sources": source_stats,
        "splits": {name: len(split_examples[name]) for name in SPLITS},
        "steps": {
            "normalize": asdict(normalization),
            "pii": asdict(pii),
            "filters": asdict(filters),
            "langid": asdict(langid),
            "dedup": asdict(dedup),
        },
    }
    write_json(out_dir / "stats.json", result)
    write_dataset_card(out_dir, result)
    _clean_work_dir(work_dir)
    log.info("corpus written to %s: %s", out_dir, ", ".join(f"{n} {len(split_examples[n])}" for n in SPLITS))
    return result


def _merge_one(
    source: SourceConfig,
    shard: Path,
    kept: list[Example],
    seen: set[bytes],
    dropped_file: IO[str],
    quarantine_file: IO[str],
    steps: _LanguageSteps,
) -> dict[str, Any]:
    """Replay one source's shard into ``kept`` (dropping exact and near duplicates of records kept
    before, in any source), writing its dropped and quarantined records; return its counts."""
    name = source_name(source)
    pivot_language = source.pivot_language if source.pivot_field or source.pivot_path else ""
    read = quarantined = 0
    kept_before = len(kept)
    dropped = Counter({reason: 0 for reason in DROP_REASONS})
    for item in _read_shard(shard):
        if "report" in item:
            steps.reports.append(item["report"])
            continue
        read += 1
        where = {"source": name, "file": source.path, "line": item["line"]}
        if "error" in item:
            quarantined += 1
            _write_jsonl_line(quarantine_file, {**where, "reason": item["error"], "raw": item["raw"]})
            continue
        text, pivot, tags, reason = item["text"], item["pivot"], item["tags"], item["reason"]
        near: Match | None = None
        if not reason:
            key = _dedup_key(source.language, text, pivot)
            if key in seen:
                reason = "duplicate"
            elif near := steps.near_duplicate(f"{name}:{item['line']}", text, pivot):
                reason = "near_duplicate"
            else:
                # Only kept records enter the seen-set: a duplicate is always of a record kept before.
                seen.add(key)
        if reason:
            dropped[reason] += 1
            line = {**where, "reason": reason, "text": text, "pivot_text": pivot, "normalization": tags}
            if near is not None:
                line.update(duplicate_of=near.key, similarity=near.similarity)
            _write_jsonl_line(dropped_file, line)
            continue
        kept.append(
            Example(
                id=f"{name}:{item['line']}",
                language=source.language,
                text=text,
                pivot_language=pivot_language if pivot else "",
                pivot_text=pivot,
                source=name,
                license=source.license,
                file=source.path,
                line=item["line"],
                normalization=tags,
            )
        )
    n_kept = len(kept) - kept_before
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
        "language": source.language,
        "pivot_language": pivot_language,
        "license": source.license,
        "redistribution": source.redistribution,
        "card": source.card,
        "read": read,
        "kept": n_kept,
        "dropped": dict(dropped),
        "quarantined": quarantined,
    }


def _decontaminate(
    splits: dict[str, dict[str, list[Example]]],
    cfg: DedupConfig,
    source_stats: list[dict[str, Any]],
    dropped_file: IO[str],
) -> set[str]:
    """Remove from every language's train split the records whose text or pivot overlaps a dev or
    test text of any language (multi-way corpora share pivot sentences) or a segment of the
    ``decontaminate_against`` files; write them to ``dropped_file``, move them from kept to dropped in
    ``source_stats``, and return their ids."""
    decontaminator = Decontaminator(cfg.ngram, cfg.decontaminate_min_words)
    for per_split in splits.values():
        for name in ("dev", "test"):
            for example in per_split[name]:
                decontaminator.add(example.text, f"{name}:{example.id}")
                if example.pivot_text:
                    decontaminator.add(example.pivot_text, f"{name}:{example.id}:pivot")
    for path in cfg.decontaminate_against:
        decontaminator.add_file(path)
    by_name = {s["name"]: s for s in source_stats}
    removed: set[str] = set()
    per_source: Counter[str] = Counter()
    for per_split in splits.values():
        train = []
        for example in per_split["train"]:
            overlap = decontaminator.find(example.text)
            if overlap is None and example.pivot_text:
                overlap = decontaminator.find(example.pivot_text)
            if overlap is None:
                train.append(example)
                continue
            removed.add(example.id)
            per_source[example.source] += 1
            stats = by_name[example.source]
            stats["kept"] -= 1
            stats["dropped"]["decontaminated"] += 1
            _write_jsonl_line(
                dropped_file,
                {"source": example.source, "file": example.file, "line": example.line, "reason": "decontaminated",
                 "text": example.text, "pivot_text": example.pivot_text, "normalization": example.normalization,
                 "overlap": overlap[0], "overlaps": overlap[1]},
            )  # fmt: skip
        per_split["train"] = train
    log.info(
        "decontamination: %d evaluation segments; %d training records removed (%s)",
        len(decontaminator),
        len(removed),
        ", ".join(f"{name} {n}" for name, n in per_source.items()) or "none",
    )
    return removed
