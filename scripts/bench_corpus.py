#!/usr/bin/env python
"""Corpus build throughput and peak memory on N lines (default 1,000,000), against a plain reference.

    .venv/bin/python scripts/bench_corpus.py --lines 100000
    .venv/bin/python scripts/bench_corpus.py --lines 1000000 --workers 1 4
    .venv/bin/python scripts/bench_corpus.py --text wol_Latn:wolof.txt --text swh_Latn:swahili.txt
    .venv/bin/python scripts/bench_corpus.py --lines 100000 --workers 1 2 --datatrove-pipeline
    .venv/bin/python scripts/bench_corpus.py --text swh_Latn:mafand.train.swa --lines 1000000 --datatrove-pipeline

Input: generated lines (four sources: Wolof text, Wolof-French TSV pairs, Swahili text, Lingala text;
~5% exact duplicates, ~3% with a phone number, ~2% French), or your own files with ``--text LANG:PATH``
(one segment per line; each file is one source; with ``--lines`` too, each file is read over and over
until the files give that many lines together, so the repeats are exact duplicates).

Printed:
- records/s of each step run alone over all the lines, in this process (read, normalize, pii, filters,
  langid, exact dedup, MinHash signatures as the per-source phase computes them, the merge's
  near-duplicate lookup, decontamination against 1,000 held-out texts, parquet write);
- the whole ``build_corpus`` for each ``--workers`` value (and on datatrove's local executor with
  ``--datatrove``), each in a subprocess of its own: wall time, records/s, the peak resident set of
  the largest single process of its tree (``wait4``'s rusage) and the peak of the tree's summed
  resident sets (sampled every 0.1 s with psutil);
- a reference pipeline in a subprocess too: a plain loop over the same files doing NFC + whitespace
  normalization and exact dedup with a set of hashes, writing the kept lines; and the ratio;
- with ``--datatrove-pipeline``, the closest datatrove pipeline to langkit's, built in the same run on
  the same input, per ``--workers`` value, each in a subprocess: the sources are first written as JSONL
  (one file per source, ``text`` and, for pairs, ``pivot``; not timed) and langkit builds from those
  same files. datatrove: JsonlReader -> a NFC + whitespace formatter (langkit's normalizer does that and
  more; datatrove's FTFYFormatter repairs mojibake, which langkit does not, so it is left out) ->
  PIIFormatter (e-mails, IPs) -> GopherRepetitionFilter and GopherQualityFilter with thresholds for
  one-line documents (langkit's: repeated 3-grams <= 0.5, 1 to 2,000 words, letters >= 0.5) -> the four
  MinHash stages (MinhashDedupSignature, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter;
  128 hashes as 16 buckets of 8, word 5-gram shingles where langkit's default is character 5-grams) ->
  JsonlWriter; one task per source file, ``workers`` at a time, 16 bucket tasks. Language
  identification is left out on both sides (``langid.enabled: false`` for langkit: datatrove's needs a
  fastText model that cannot be downloaded here), and datatrove does no split, decontamination, exact
  dedup apart from MinHash, or card. Printed: wall time, records/s, peak RSS, and langkit's records/s
  over datatrove's for the same workers. Needs datatrove 0.10, orjson and xxhash < 4 (the dev extra).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LANGKIT_NO_PROGRESS", "1")

WOL = "ñaata waa dëkk bi ak jàng lekk naan xam dem ñëw ci ngir moo ma nga mu ñu yow man seen suñu"
SWH = "habari ya leo watu wengi wanapenda kusoma vitabu shuleni kwa sababu ni muhimu sana kwetu"
LIN = "mbote na bino bato ya mboka bazali kosala mosala na makasi mpo na bana na bango lelo"
FRA = "le la les un une de du et est dans pour avec sur pas plus tout mais nous vous ils"


def generate(folder: Path, lines: int, seed: int = 0) -> list[dict[str, Any]]:
    """Four sources sharing ``lines`` lines; returns their corpus source configs."""
    rng = random.Random(seed)
    vocab = {k: v.split() for k, v in {"wol": WOL, "swh": SWH, "lin": LIN, "fra": FRA}.items()}

    def line(lang: str, i: int) -> str:
        r = rng.random()
        words = " ".join(rng.choice(vocab[lang]) for _ in range(rng.randint(5, 20)))
        if r < 0.03:
            return f"{words} +221 77 {i % 900 + 100} {i % 90 + 10:02d} {i % 89 + 10:02d}"
        if r < 0.05:
            return " ".join(rng.choice(vocab["fra"]) for _ in range(10))
        return words

    def body(lang: str, n: int) -> list[str]:
        out: list[str] = []
        for i in range(n):
            out.append(rng.choice(out) if out and rng.random() < 0.05 else line(lang, i))
        return out

    quarter = lines // 4
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for lang, code in (("wol", "wol_Latn"), ("swh", "swh_Latn"), ("lin", "lin_Latn")):
        n = lines - 3 * quarter if lang == "wol" else quarter
        path = folder / f"{lang}.txt"
        path.write_text("\n".join(body(lang, n)) + "\n", encoding="utf-8")
        sources.append({"path": str(path), "format": "text", "language": code, "name": f"{lang}-text"})
    pairs = [
        f"{i}\t{w}\t{f}"
        for i, (w, f) in enumerate(zip(body("wol", quarter), body("fra", quarter), strict=True))
    ]
    path = folder / "wol-fra.tsv"
    path.write_text("id\twol_Latn\tfra_Latn\n" + "\n".join(pairs) + "\n", encoding="utf-8")
    sources.append({"path": str(path), "format": "tsv", "language": "wol_Latn", "name": "wol-pairs",
                    "text_field": "wol_Latn", "pivot_field": "fra_Latn", "pivot_language": "fra_Latn"})  # fmt: skip
    for s in sources:
        s["license"] = "CC-BY-4.0"
    return sources


def _child_build(spec: str) -> None:
    """Subprocess: one whole build_corpus (the parent measures wall time and peak RSS)."""
    from langkit.config import config_from_dict
    from langkit.corpus import build_from_config

    args = json.loads(spec)
    corpus = {"sources": args["sources"], "workers": args["workers"], "executor": args.get("executor", "local"),
              # monolingual input (--text) gives no aligned pairs to hold out: empty dev/test are expected
              "allow_empty": ["dev", "test"]}
    if args.get("no_langid"):
        corpus["langid"] = {"enabled": False}
    cfg = config_from_dict({"languages": args["languages"], "corpus": corpus})
    build_from_config(cfg, args["out"])


def _child_reference(spec: str) -> None:
    """Subprocess: the plain reference pipeline (NFC + whitespace, exact dedup, write)."""
    args = json.loads(spec)
    space = re.compile(r"\s+")
    seen: set[bytes] = set()
    with open(Path(args["out"]), "w", encoding="utf-8") as out:
        for source in args["sources"]:
            with open(source["path"], encoding="utf-8") as f:
                for i, raw in enumerate(f):
                    if source["format"] == "tsv":
                        if i == 0:
                            continue
                        raw = raw.rstrip("\n").split("\t")[1]
                    elif source["format"] == "jsonl":
                        raw = json.loads(raw)["text"]
                    text = space.sub(" ", unicodedata.normalize("NFC", raw)).strip()
                    key = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
                    if text and key not in seen:
                        seen.add(key)
                        out.write(text + "\n")


def _child_datatrove(spec: str) -> None:
    """Subprocess: the datatrove pipeline closest to langkit's (see the module docstring)."""
    import unicodedata as ud

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.formatters.base import BaseFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.word_tokenizers import WordTokenizer

    class SplitWords(WordTokenizer):  # type: ignore[misc]
        """Words split on spaces: datatrove's tokenizers for these languages need spaCy or Stanza
        models (not installed); langkit's filters split on spaces too."""

        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    space = re.compile(r"\s+")

    class NfcFormatter(BaseFormatter):  # type: ignore[misc]
        name = "NFC + spaces"

        def format(self, text: str) -> str:
            return space.sub(" ", ud.normalize("NFC", text)).strip()

    args = json.loads(spec)
    work, workers, files = Path(args["out"]), args["workers"], args["files"]
    words = SplitWords()
    minhash = MinhashConfig(n_grams=5, num_buckets=16, hashes_per_bucket=8)  # 128 hashes
    # datatrove's default logging_dir is ./logs in the current folder: keep its logs with the run's files
    common = {"skip_completed": False, "workers": workers}
    stages = [
        LocalPipelineExecutor(pipeline=[
            JsonlReader(args["input"], glob_pattern="*.jsonl"),
            NfcFormatter(),
            PIIFormatter(),
            GopherRepetitionFilter(dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None,
                                   dup_para_char_frac=None, top_n_grams=((3, 0.5),), dup_n_grams=((3, 0.5),),
                                   language=words),
            GopherQualityFilter(min_doc_words=1, max_doc_words=2000, min_avg_word_length=None,
                                max_avg_word_length=None, max_symbol_word_ratio=None, max_bullet_lines_ratio=None,
                                max_ellipsis_lines_ratio=None, max_non_alpha_words_ratio=0.5, min_stop_words=None,
                                language=words),
            JsonlWriter(str(work / "filtered"), compression=None),
            MinhashDedupSignature(str(work / "signatures"), config=minhash, language=words),
        ], tasks=files, logging_dir=str(work / "logs" / "stage1"), **common),
        LocalPipelineExecutor(pipeline=[
            MinhashDedupBuckets(str(work / "signatures"), str(work / "buckets"), config=minhash),
        ], tasks=minhash.num_buckets, logging_dir=str(work / "logs" / "stage2"), **common),
        LocalPipelineExecutor(pipeline=[
            MinhashDedupCluster(str(work / "buckets"), str(work / "remove_ids"), config=minhash),
        ], tasks=1, logging_dir=str(work / "logs" / "stage3"), **{**common, "workers": 1}),
        LocalPipelineExecutor(pipeline=[
            JsonlReader(str(work / "filtered"), glob_pattern="*.jsonl"),
            MinhashDedupFilter(str(work / "remove_ids")),
            JsonlWriter(str(work / "output"), compression=None),
        ], tasks=files, logging_dir=str(work / "logs" / "stage4"), **common),
    ]  # fmt: skip
    for stage in stages:
        stage.run()


def run_child(kind: str, spec: dict[str, Any], log_to: Path | None = None) -> tuple[float, int, int]:
    """Wall seconds, peak RSS of the largest single process (MiB) and peak summed RSS of the whole
    process tree (MiB, sampled every 0.1 s; 0 without psutil) of one child run."""
    import threading

    start = time.perf_counter()
    log = open(log_to, "w") if log_to is not None else None  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, __file__, f"--_{kind}", json.dumps(spec)], stdout=log, stderr=log)
    tree_peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal tree_peak
        try:
            import psutil
        except ImportError:
            return
        try:
            root = psutil.Process(proc.pid)
            while not done.is_set():
                total = 0
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                tree_peak = max(tree_peak, total)
                done.wait(0.1)
        except psutil.Error:
            return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    if log is not None:
        log.close()
    if os.waitstatus_to_exitcode(status) != 0:
        tail = log_to.read_text(encoding="utf-8", errors="replace")[-3000:] if log_to is not None else ""
        raise SystemExit(f"{kind} child failed with status {status}" + (f"; the end of its log:\n{tail}" if tail else ""))
    # ru_maxrss of wait4 is the largest peak of any one process of the tree (the child, or a pool
    # worker it waited for), not their sum; the sampled tree figure is the sum.
    return wall, usage.ru_maxrss // 1024, tree_peak // 2**20


def step_rates(
    sources: list[dict[str, Any]], languages: list[str], work: Path
) -> tuple[dict[str, float], int]:
    """Records/s of each step alone, in this process; and the near-dup index size (entries)."""
    from langkit.config import FilterConfig, LangIdConfig, NormalizeConfig, PiiConfig, SourceConfig
    from langkit.corpus.build import MERGE_CHUNK, Example, decide_chunk, write_split
    from langkit.corpus.dedup import Decontaminator, MinHasher, NearDuplicateIndex
    from langkit.corpus.filters import check_quality
    from langkit.corpus.langid import LangIdFilter
    from langkit.corpus.normalize import Normalizer
    from langkit.corpus.pii import PiiScrubber
    from langkit.corpus.readers import read_source
    from langkit.corpus.shards import SIGNATURE_BATCH, record_digest
    from langkit.corpus.stores import DigestSet

    rates: dict[str, float] = {}

    def timed(name: str, n: int, fn: Any) -> Any:
        start = time.perf_counter()
        result = fn()
        rates[name] = n / max(time.perf_counter() - start, 1e-9)
        return result

    configs = [SourceConfig(**s) for s in sources]
    start = time.perf_counter()
    records = [(c.language, r.text) for c in configs for r in read_source(c) if not r.error]
    n = len(records)
    rates["read"] = n / (time.perf_counter() - start)
    normalizers = {lang: Normalizer(lang, NormalizeConfig()) for lang in languages}
    texts = timed("normalize", n, lambda: [(lang, normalizers[lang](t)[0]) for lang, t in records])
    scrubber = PiiScrubber(PiiConfig())
    texts = timed("pii", n, lambda: [(lang, scrubber(t)[0]) for lang, t in texts])
    filters = FilterConfig()
    timed("filters", n, lambda: [check_quality(t, lang, filters) for lang, t in texts])
    langid = LangIdFilter(LangIdConfig())
    timed("langid", n, lambda: [langid(t, lang) for lang, t in texts])

    def exact() -> list[tuple[str, str]]:
        seen: set[bytes] = set()
        kept = []
        for lang, t in texts:
            key = hashlib.blake2b(f"{lang}\x00{t}".encode(), digest_size=16).digest()
            if key not in seen:
                seen.add(key)
                kept.append((lang, t))
        return kept

    kept = timed("dedup exact", n, exact)
    # The near-duplicate step as the build runs it: signatures in the per-source phase (batches of
    # SIGNATURE_BATCH records), then the merge's decide_chunk per chunk of MERGE_CHUNK records.
    hasher = MinHasher()

    def minhash() -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for i in range(0, len(kept), SIGNATURE_BATCH):
            sigs, _, short = hasher.signatures([(t, "") for _, t in kept[i : i + SIGNATURE_BATCH]])
            out.append((sigs, short))
        return out

    batches = timed("minhash (per-source phase)", len(kept), minhash)
    index = NearDuplicateIndex(signature_file=work / "signatures.bin")
    digests = np.array([record_digest(lang, t, "") for lang, t in kept], dtype=np.uint64)

    def near() -> int:
        # As the merge runs it (decide_chunk), on exact-deduplicated text: one language, every record
        # signed; counted: the lookups, the in-chunk pairs and the indexing of the kept records.
        sigs = np.concatenate([b[0] for b in batches])
        short = np.concatenate([b[1] for b in batches])
        seen = DigestSet()
        dropped = 0
        for lo in range(0, len(sigs), MERGE_CHUNK):
            hi = min(lo + MERGE_CHUNK, len(sigs))
            verdict, _ = decide_chunk(seen, index, [str(i) for i in range(lo, hi)], digests[lo:hi],
                                      np.ones(hi - lo, dtype=bool), sigs[lo:hi], short[lo:hi])  # fmt: skip
            dropped += int((verdict != 0).sum())
            seen.flush()
            index.flush()
        return dropped

    timed("near-dup lookup (merge)", len(kept), near)
    index.close()
    decon = Decontaminator()
    for i, (_, t) in enumerate(kept[:1000]):
        decon.add(t, f"test:{i}")
    timed("decontamination", len(kept), lambda: [decon.find(t) for _, t in kept])
    examples = [
        Example(str(i), lang, t, "", "", "s", "CC-BY-4.0", "f", i) for i, (lang, t) in enumerate(kept)
    ]
    timed("write", len(examples), lambda: write_split(work / "bench.parquet", examples))
    return rates, len(index)


def _text_sources(items: list[str], lines: int | None, folder: Path) -> list[dict[str, Any]]:
    """``LANG:PATH`` files as text sources; with ``lines``, copies cycled to that many lines in all."""
    sources = []
    folder.mkdir(parents=True, exist_ok=True)
    for i, item in enumerate(items):
        lang, _, path = item.partition(":")
        path = str(Path(path).resolve())
        if lines:
            with open(path, encoding="utf-8") as f:
                body = f.read().splitlines()
            want = lines // len(items) + (i < lines % len(items))
            path = str(folder / f"{i}-{Path(path).name}")
            with open(path, "w", encoding="utf-8") as out:
                for k in range(want):
                    out.write(body[k % len(body)] + "\n")
        sources.append({"path": path, "format": "text", "language": lang, "name": f"{lang}-{i}",
                        "license": "CC-BY-4.0"})  # fmt: skip
    return sources


def _as_jsonl(sources: list[dict[str, Any]], folder: Path) -> list[dict[str, Any]]:
    """The same records as one JSONL file per source (``text``, ``pivot`` for pairs), the input both
    langkit and datatrove read when they are compared."""
    from langkit.config import SourceConfig
    from langkit.corpus.readers import read_source

    folder.mkdir(parents=True)
    out = []
    for i, s in enumerate(sources):
        path = folder / f"{i:03d}-{s['name']}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for r in read_source(SourceConfig(**s)):
                if r.error:
                    continue
                row = {"id": f"{s['name']}:{r.line}", "text": r.text}
                if s.get("pivot_field"):
                    row["pivot"] = r.pivot_text
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        jsonl = {k: v for k, v in s.items() if k not in ("text_field", "pivot_field", "pivot_language")}
        jsonl.update(path=str(path), format="jsonl", text_field="text")
        if s.get("pivot_field"):
            jsonl.update(pivot_field="pivot", pivot_language=s["pivot_language"])
        out.append(jsonl)
    return out


def main() -> None:
    children = {"--_build": _child_build, "--_reference": _child_reference, "--_datatrove": _child_datatrove}
    if len(sys.argv) == 3 and sys.argv[1] in children:
        children[sys.argv[1]](sys.argv[2])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", type=int, default=None, help="generated lines (default 1,000,000), or with "
                   "--text the lines the files are repeated to")
    p.add_argument(
        "--text", action="append", default=[], metavar="LANG:PATH", help="your own input (repeatable)"
    )
    p.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    p.add_argument(
        "--datatrove",
        action="store_true",
        help="also run the build on datatrove's local executor (max workers)",
    )
    p.add_argument(
        "--datatrove-pipeline",
        action="store_true",
        help="also build the closest datatrove pipeline on the same JSONL input, per --workers value; "
        "language identification off on both sides",
    )
    p.add_argument("--skip-steps", action="store_true", help="only the whole-pipeline runs")
    p.add_argument("--no-langid", action="store_true", help="language identification off in langkit's builds "
                   "(as with --datatrove-pipeline, without the datatrove runs)")
    p.add_argument("--repeats", type=int, default=1, help="run each langkit build this many times and keep the "
                   "fastest (the machine's other load only ever slows a run down)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_corpus_") as tmp:
        work = Path(tmp)
        if args.text:
            sources = _text_sources(args.text, args.lines, work / "data")
        else:
            sources = generate(work / "data", args.lines or 1_000_000)
        if args.datatrove_pipeline:
            sources = _as_jsonl(sources, work / "jsonl")
        languages = sorted({s["language"] for s in sources})
        total = 0
        for s in sources:
            with open(s["path"], "rb") as f:
                total += sum(1 for _ in f) - (s["format"] == "tsv")
        print(f"input: {total:,} lines in {len(sources)} sources ({', '.join(languages)})")

        print("\nwhole pipeline                   wall s    records/s  peak RSS MiB  tree RSS MiB        kept")
        print("                                                     (1 process)   (sum, sampled)")
        runs: list[tuple[str, int, str]] = [(f"langkit, {w} worker(s)", w, "local") for w in args.workers]
        if args.datatrove:
            runs.append((f"langkit, datatrove {max(args.workers)}w", max(args.workers), "datatrove"))
        if args.datatrove_pipeline or args.no_langid:
            print("  (language identification off in every run: datatrove's needs a model not available here)")
        if args.repeats > 1:
            print(f"  (langkit builds: the fastest of {args.repeats} runs each)")
        results = {}
        for label, workers, executor in runs:
            spec = {
                "languages": languages,
                "sources": sources,
                "out": str(work / f"out-{executor}-{workers}"),
                "workers": workers,
                "executor": executor,
                "no_langid": args.datatrove_pipeline or args.no_langid,
            }
            runs_of = []
            for _ in range(max(1, args.repeats)):
                shutil.rmtree(spec["out"], ignore_errors=True)  # every run from scratch
                runs_of.append(run_child("build", spec))
            wall, rss, tree = min(runs_of)
            results[label] = wall
            stats = json.loads((work / f"out-{executor}-{workers}" / "stats.json").read_text(encoding="utf-8"))
            kept = sum(stats["splits"].values())
            print(f"  {label:<28}{wall:>8.1f}  {total / wall:>11,.0f}  {rss:>12,}  {tree:>12,}  {kept:>10,}")
            shutil.rmtree(work / f"out-{executor}-{workers}", ignore_errors=True)
        datatrove: dict[int, float] = {}
        if args.datatrove_pipeline:
            for workers in args.workers:
                out = work / f"datatrove-{workers}"
                spec = {"input": str(work / "jsonl"), "out": str(out), "workers": workers, "files": len(sources)}
                wall, rss, tree = run_child("datatrove", spec, log_to=work / f"datatrove-{workers}.log")
                datatrove[workers] = wall
                label = f"datatrove, {workers} worker(s)"
                kept = 0
                for path in (out / "output").glob("*.jsonl"):
                    with open(path, "rb") as f:
                        kept += sum(1 for _ in f)
                print(f"  {label:<28}{wall:>8.1f}  {total / wall:>11,.0f}  {rss:>12,}  {tree:>12,}  {kept:>10,}")
                shutil.rmtree(out, ignore_errors=True)
        wall, rss, tree = run_child("reference", {"sources": sources, "out": str(work / "reference.txt")})
        print(
            f"  {'reference (plain loop)':<28}{wall:>8.1f}  {total / wall:>11,.0f}  {rss:>12,}  {tree:>12,}"
        )
        for label, w in results.items():
            print(f"  ratio {label} / reference: {wall / w:.3f}x the reference's records/s")
        for workers, w in datatrove.items():
            mine = results.get(f"langkit, {workers} worker(s)")
            if mine:
                print(f"  ratio langkit / datatrove, {workers} worker(s): {w / mine:.2f}x datatrove's records/s")
        # After the subprocesses: a child's peak RSS counts the pages of this process it was forked
        # from, so this process must still be small when they start.
        if not args.skip_steps:
            rates, indexed = step_rates(sources, languages, work)
            print("\nstep (alone, 1 process)       records/s")
            for name, rate in rates.items():
                print(f"  {name:<28}{rate:>12,.0f}")
            print(f"  (near-dup index: {indexed:,} entries)")
            # The whole build against its slowest step (langid left out when the builds ran without it).
            no_langid = args.datatrove_pipeline or args.no_langid
            in_build = {k: v for k, v in rates.items() if not (k == "langid" and no_langid)}
            slowest = min(in_build, key=in_build.__getitem__)
            for label, w in results.items():
                print(f"  ratio {label} / slowest step ({slowest}): {total / w / in_build[slowest]:.2f}x")


if __name__ == "__main__":
    main()
