"""The per-source phase of the corpus build: each source's per-record steps into a shard on disk.

The per-record steps (read, normalize, scrub, quality filters, langid, and the MinHash signature the
near-duplicate step will need) depend on nothing outside their source, so each source runs on its
own: in this process, in a process pool (:func:`run_sources`), or as one job of a scheduler
(``langkit corpus build --only-source NAME``, or the datatrove executor of
:mod:`langkit.corpus.executors`). Each writes a shard under ``corpus/.work/``:

- ``NAME-DIGEST.arrow``: an Arrow IPC stream of the records in read order, in batches of up to
  ``SHARD_BATCH`` rows (:data:`SHARD_COLUMNS`: ``line``; ``error`` and ``raw`` for a malformed record,
  ``""`` otherwise; ``text``, ``pivot``, ``tags`` and the drop ``reason``, ``""`` to keep; ``sig`` and
  ``short``, 1 or 0, when the record reaches the dedup steps and near-duplicates are on; ``digest``, the
  exact-duplicate key of a record that reaches the dedup steps, :func:`record_digest`, 0 otherwise). A
  columnar binary
  file, not JSON lines: the merge decides a batch of rows on its columns and turns into Python objects
  only the records it drops, and the per-source phase writes it from numpy buffers;
- ``NAME-DIGEST.report.json``: what the steps counted and the encoding the source was read in;
- ``NAME-DIGEST.sig`` (near-duplicates on): the MinHash signatures of the records with ``sig`` true,
  in order, ``num_perm`` little-endian uint32 each.

``DIGEST`` hashes everything the shard's content depends on (source config, the input file's size and
time, the step configs, langkit's version), so a changed input or config never reuses an old shard.
Every file is written under a temporary name and renamed into place, the ``.arrow`` last: a shard
whose ``.arrow`` exists is whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from langkit import __version__
from langkit.config import DedupConfig, FilterConfig, LangIdConfig, NormalizeConfig, PiiConfig, SourceConfig
from langkit.corpus.dedup import MinHasher
from langkit.corpus.filters import check_quality
from langkit.corpus.langid import LangIdFilter
from langkit.corpus.normalize import Normalizer
from langkit.corpus.pii import PLACEHOLDERS, PiiScrubber
from langkit.corpus.readers import Record, read_source, source_encoding, source_name
from langkit.utils import get_logger, progress

log = get_logger("corpus")

WORK_DIR = ".work"
"""Under the corpus folder: one finished shard per source (the per-record steps' results)."""
CRASH_ENV = "LANGKIT_TEST_CRASH_AFTER_SOURCE"
"""Test hook: with ``N`` set, the build exits at once (``os._exit(137)``, like a SIGKILL) after the
N-th source shard is written, to test that a re-run resumes and gives the same output."""
SIGNATURE_BATCH = 256
"""Records whose signatures are computed together (one batch of numpy work)."""
SHARD_BATCH = 8_192
"""Rows per record batch of a shard's Arrow stream."""
SHARD_COLUMNS = ("line", "error", "raw", "text", "pivot", "tags", "reason", "sig", "short", "digest")
"""The columns of a shard, in order (:func:`shard_batches` yields its record batches)."""
SHARD_FORMAT = 2
"""Part of every shard's name: a shard written by an older layout is never read as a current one."""


def _shard_schema() -> Any:
    import pyarrow as pa

    types = {"line": pa.int64(), "tags": pa.list_(pa.large_string()), "sig": pa.int8(), "short": pa.int8(),
             "digest": pa.uint64()}  # fmt: skip
    return pa.schema([(name, types.get(name, pa.large_string())) for name in SHARD_COLUMNS])


def string_array(values: Sequence[str] | str, n: int = 0, large: bool = False) -> Any:
    """A pyarrow (large_)string array of ``values``, or of ``n`` times one string, built from numpy
    buffers: pyarrow's conversion of Python lists (``pa.array``) imports pandas on first use, half a
    second and 50 MB more in every process of the build."""
    import pyarrow as pa

    kind, offset_type = (pa.large_string(), np.int64) if large else (pa.string(), np.int32)
    if isinstance(values, str):
        one = values.encode("utf-8")
        offsets, data = np.arange(n + 1, dtype=offset_type) * len(one), one * n
    else:
        encoded = [v.encode("utf-8") for v in values]
        offsets = np.zeros(len(encoded) + 1, dtype=offset_type)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        data, n = b"".join(encoded), len(encoded)
    return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _batch(rows: list[list[Any]], schema: Any) -> Any:
    """One record batch of shard rows, its arrays built from numpy buffers (see :func:`string_array`)."""
    import pyarrow as pa

    def buffer(values: Any, dtype: Any) -> Any:
        return pa.py_buffer(np.ascontiguousarray(np.asarray(values, dtype=dtype)))

    n = len(rows)
    columns = list(zip(*rows, strict=True))
    arrays = []
    for name, values in zip(SHARD_COLUMNS, columns, strict=True):
        if name == "line":
            arrays.append(pa.Array.from_buffers(pa.int64(), n, [None, buffer(values, np.int64)]))
        elif name in ("sig", "short"):
            arrays.append(pa.Array.from_buffers(pa.int8(), n, [None, buffer(values, np.int8)]))
        elif name == "digest":
            arrays.append(pa.Array.from_buffers(pa.uint64(), n, [None, buffer(values, np.uint64)]))
        elif name == "tags":
            counts = np.zeros(n + 1, dtype=np.int32)
            np.cumsum([len(tags) for tags in values], out=counts[1:])
            tags = string_array([t for tags in values for t in tags], large=True)
            arrays.append(pa.Array.from_buffers(schema.field("tags").type, n, [None, pa.py_buffer(counts)],
                                                children=[tags]))  # fmt: skip
        else:
            arrays.append(string_array(values, large=True))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


@dataclass(frozen=True)
class Steps:
    """The configs of the per-record steps: what a shard's content depends on besides its source."""

    normalize: NormalizeConfig
    pii: PiiConfig
    filters: FilterConfig
    langid: LangIdConfig
    dedup: DedupConfig

    def signature_key(self) -> dict[str, Any] | None:
        """The dedup settings the shard's signatures depend on (None: no signatures)."""
        d = self.dedup
        if not d.near_duplicates:
            return None
        return {"num_perm": d.num_perm, "shingle": d.shingle, "unit": d.shingle_unit,
                "min_words": d.min_words, "seed": d.seed}  # fmt: skip

    def hasher(self) -> MinHasher | None:
        d = self.dedup
        if not d.near_duplicates:
            return None
        return MinHasher(d.num_perm, d.shingle, d.shingle_unit, d.min_words, d.seed)


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


def umask_mode(path: str) -> None:
    """mkstemp creates 0600 files; give the output the usual permissions (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A file written under a temporary name, synced and renamed into place on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            # On disk before the rename: after a crash the name holds the whole file or nothing.
            f.flush()
            os.fsync(f.fileno())
        umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl_line(f: IO[str], data: dict[str, Any]) -> None:
    f.write(json.dumps(data, ensure_ascii=False) + "\n")


def _file_stamp(path: str) -> list[Any] | None:
    # A changed input must not reuse an old shard; size and mtime catch an edit without reading the
    # whole file again. A folder (a dataset saved on disk) is stamped by every file in it: its own mtime
    # does not change when a file inside is rewritten. A Hub id or a missing path has no stamp.
    try:
        st = os.stat(path)
    except OSError:
        return None
    if os.path.isdir(path):
        return sorted([str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns]
                      for p in Path(path).rglob("*") if p.is_file())
    return [st.st_size, st.st_mtime_ns]


def shard_path(work_dir: Path, source: SourceConfig, steps: Steps) -> Path:
    """The shard of one source's per-record steps (its ``.arrow``; the ``.sig`` and ``.report.json``
    beside it), named by
    a hash of everything its content depends on: the source config and files, the per-record step
    configs, the signature settings and langkit's version."""
    key = {
        "source": asdict(source),
        "stamps": [_file_stamp(source.path), _file_stamp(source.pivot_path) if source.pivot_path else None],
        "steps": [asdict(steps.normalize), asdict(steps.pii), asdict(steps.filters), asdict(steps.langid)],
        "signatures": steps.signature_key(),
        "langkit": __version__,
        "format": SHARD_FORMAT,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:20]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in source_name(source))
    return work_dir / f"{safe}-{digest}.arrow"


def signature_path(shard: Path) -> Path:
    return shard.with_suffix(".sig")


def report_path(shard: Path) -> Path:
    return shard.with_suffix(".report.json")


def process_source(source: SourceConfig, shard: Path, steps: Steps) -> str:
    """Run the per-record steps over one source into its shard (see the module docstring); written
    atomically, so a shard that exists is whole. Returns the shard's path."""
    langid_filter = LangIdFilter(steps.langid) if steps.langid.enabled else None
    source_steps = _SourceSteps(source.language, steps.normalize, steps.pii, steps.filters, langid_filter)
    hasher = steps.hasher()
    name = source_name(source)
    pivot_language = source.pivot_language if source.pivot_field or source.pivot_path else ""
    record: Record
    schema = _shard_schema()
    # Renamed into place in this order: the .sig and the report (inner blocks end first), the .arrow last.
    with atomic_file(shard, "wb") as f:
        import pyarrow as pa

        writer = pa.ipc.new_stream(f, schema)
        with atomic_file(signature_path(shard), "wb") if hasher else _no_file() as sig_file:
            # Rows as lists in SHARD_COLUMNS order; a candidate's sig and short are filled in when its
            # batch of signatures is written.
            pending: list[list[Any]] = []
            candidates: list[list[Any]] = []
            rows: list[list[Any]] = []  # decided rows, written as one record batch

            def write_rows() -> None:
                if rows:
                    writer.write_batch(_batch(rows, schema))
                    rows.clear()

            def flush() -> None:
                if hasher is not None and candidates:
                    sigs, has, short = hasher.signatures([(c[3], c[4]) for c in candidates])
                    for row, h, s in zip(candidates, has.tolist(), short.tolist(), strict=True):
                        row[7], row[8] = int(h), int(s)
                    sig_file.write(sigs.astype("<u4", copy=False).tobytes())
                rows.extend(pending)
                pending.clear()
                candidates.clear()
                if len(rows) >= SHARD_BATCH:
                    write_rows()

            for record in progress(read_source(source), desc=f"corpus: {name}"):
                if record.error:
                    pending.append([record.line, record.error, record.raw, "", "", [], "", 0, 0, 0])
                else:
                    # A paired source's row with an empty pivot still gives monolingual text.
                    text, pivot, tags, reason = source_steps.process(
                        record.text, pivot_language, record.pivot_text
                    )
                    row = [record.line, "", "", text, pivot, tags, reason, 0, 0, 0]
                    pending.append(row)
                    if not reason:
                        row[9] = record_digest(source.language, text, pivot)
                        candidates.append(row)
                if len(candidates) >= SIGNATURE_BATCH or len(pending) >= 8 * SIGNATURE_BATCH:
                    flush()
            flush()
            write_rows()
            writer.close()
        with atomic_file(report_path(shard)) as r:
            r.write(json.dumps({**source_steps.report(), "encoding": source_encoding(source)}, ensure_ascii=False))
    return str(shard)


@contextmanager
def _no_file() -> Iterator[Any]:
    yield None


def shard_batches(shard: Path) -> Iterator[Any]:
    """A shard's rows in order, as pyarrow record batches with the columns :data:`SHARD_COLUMNS`."""
    import pyarrow as pa

    with pa.OSFile(str(shard), "rb") as f, pa.ipc.open_stream(f) as reader:
        yield from reader


def record_digest(language: str, text: str, pivot: str) -> int:
    """The exact-duplicate key of a record: 8 bytes of BLAKE2b of its language, text and pivot (two
    different records collide with probability about n^2 / 2^65: 3e-8 for a million kept records of
    one language). Computed in the per-source phase, so the merge only compares integers."""
    key = "\x00".join((language, text, pivot)).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def read_report(shard: Path) -> dict[str, Any]:
    """What a source's per-record steps counted, and the encoding it was read in (``encoding``)."""
    with open(report_path(shard), encoding="utf-8") as f:
        report: dict[str, Any] = json.load(f)
    return report


def missing_shards(sources: list[SourceConfig], shards: dict[str, Path]) -> list[SourceConfig]:
    """The sources whose shard is not written yet (a shard's name hashes all it depends on, so one that
    exists is finished and current); logs how many are reused. Every executor starts here."""
    todo = [s for s in sources if not shards[source_name(s)].is_file()]
    if len(todo) < len(sources):
        log.info("reusing %d finished source shard(s) in %s", len(sources) - len(todo), WORK_DIR)
    return todo


def exit_with_parent(parent: int) -> None:
    """Initializer of the build's worker processes: a thread that ends the process when its parent
    (the build) is gone, killed or crashed, instead of leaving it waiting for work that will not come
    (a pool worker keeps its own end of the work queue open, so it never sees the queue close)."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes that exit when this one is gone (:func:`exit_with_parent`)."""
    import multiprocessing

    # spawn, not fork: a forked child would inherit the parent's threads' locks (tqdm, logging).
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=exit_with_parent,
                               initargs=(os.getpid(),))  # fmt: skip


def run_sources(sources: list[SourceConfig], shards: dict[str, Path], steps: Steps, workers: int) -> Iterator[str]:
    """Write the shards that are missing, ``workers`` sources at a time (0: one per core), and yield
    each source's name, in the order of ``sources``, as soon as its shard and those of the sources
    before it are written: the merge replays a shard while the pool still works on the later ones.
    Closing the generator early (or a failed source) cancels the sources not started, and waits for
    those running to end."""
    todo = {source_name(s) for s in missing_shards(sources, shards)}
    crash_after = int(os.environ.get(CRASH_ENV, "0") or 0)
    done = 0

    def finished(path: str) -> None:
        nonlocal done
        done += 1
        log.info("source shard written: %s", Path(path).name)
        if crash_after and done >= crash_after:
            flush_logs()
            os._exit(137)

    n = min(workers or os.cpu_count() or 1, len(todo))
    if n <= 1:
        for source in sources:
            name = source_name(source)
            if name in todo:
                finished(process_source(source, shards[name], steps))
            yield name
        return
    with worker_pool(n) as pool:
        futures = {source_name(s): pool.submit(process_source, s, shards[source_name(s)], steps)
                   for s in sources if source_name(s) in todo}  # fmt: skip
        try:
            for source in sources:
                name = source_name(source)
                if name in futures:
                    finished(futures[name].result())
                yield name
        except BaseException:  # a failed source, or the merge stopped (GeneratorExit): cancel the sources
            pool.shutdown(cancel_futures=True)  # not started instead of reading them all first
            raise


def flush_logs() -> None:
    """os._exit skips the interpreter's shutdown: flush what was logged so a test can see it."""
    for handler in logging.getLogger("langkit").handlers:
        handler.flush()
    sys.stderr.flush()
