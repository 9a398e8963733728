#!/usr/bin/env python
"""Corpus build throughput and peak memory on N lines (default 1,000,000), against a plain reference.

    .venv/bin/python scripts/bench_corpus.py --lines 100000
    .venv/bin/python scripts/bench_corpus.py --lines 1000000 --workers 1 4
    .venv/bin/python scripts/bench_corpus.py --text wol_Latn:wolof.txt --text swh_Latn:swahili.txt

Input: generated lines (four sources: Wolof text, Wolof-French TSV pairs, Swahili text, Lingala text;
~5% exact duplicates, ~3% with a phone number, ~2% French), or your own files with ``--text LANG:PATH``
(one segment per line; each file is one source).

Printed:
- records/s of each step run alone over all the lines, in this process (read, normalize, pii, filters,
  langid, exact dedup, MinHash signatures as the per-source phase computes them, the merge's
  near-duplicate lookup, decontamination against 1,000 held-out texts, parquet write);
- the whole ``build_corpus`` for each ``--workers`` value (and on datatrove's local executor with
  ``--datatrove``), each in a subprocess of its own: wall time, records/s, the peak resident set of
  the largest single process of its tree (``wait4``'s rusage) and the peak of the tree's summed
  resident sets (sampled every 0.1 s with psutil);
- a reference pipeline in a subprocess too: a plain loop over the same files doing NFC + whitespace
  normalization and exact dedup with a set of hashes, writing the kept lines; and the ratio.
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
    cfg = config_from_dict({"languages": args["languages"], "corpus": {
        "sources": args["sources"], "workers": args["workers"], "executor": args.get("executor", "local")}})
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
                    text = space.sub(" ", unicodedata.normalize("NFC", raw)).strip()
                    key = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
                    if text and key not in seen:
                        seen.add(key)
                        out.write(text + "\n")


def run_child(kind: str, spec: dict[str, Any]) -> tuple[float, int, int]:
    """Wall seconds, peak RSS of the largest single process (MiB) and peak summed RSS of the whole
    process tree (MiB, sampled every 0.1 s; 0 without psutil) of one child run."""
    import threading

    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, f"--_{kind}", json.dumps(spec)])
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
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{kind} child failed with status {status}")
    # ru_maxrss of wait4 is the largest peak of any one process of the tree (the child, or a pool
    # worker it waited for), not their sum; the sampled tree figure is the sum.
    return wall, usage.ru_maxrss // 1024, tree_peak // 2**20


def step_rates(
    sources: list[dict[str, Any]], languages: list[str], work: Path
) -> tuple[dict[str, float], int]:
    """Records/s of each step alone, in this process; and the near-dup index size (entries)."""
    from langkit.config import FilterConfig, LangIdConfig, NormalizeConfig, PiiConfig, SourceConfig
    from langkit.corpus.build import MERGE_CHUNK, Example, write_split
    from langkit.corpus.dedup import Decontaminator, MinHasher, NearDuplicateIndex
    from langkit.corpus.filters import check_quality
    from langkit.corpus.langid import LangIdFilter
    from langkit.corpus.normalize import Normalizer
    from langkit.corpus.pii import PiiScrubber
    from langkit.corpus.readers import read_source
    from langkit.corpus.shards import SIGNATURE_BATCH

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
    # SIGNATURE_BATCH records), then in the merge one vectorized lookup per chunk of MERGE_CHUNK and the
    # in-chunk decisions one record at a time.
    hasher = MinHasher()

    def minhash() -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for i in range(0, len(kept), SIGNATURE_BATCH):
            sigs, _, short = hasher.signatures([(t, "") for _, t in kept[i : i + SIGNATURE_BATCH]])
            out.append((sigs, short))
        return out

    batches = timed("minhash (per-source phase)", len(kept), minhash)
    index = NearDuplicateIndex(signature_file=work / "signatures.bin")

    def near() -> int:
        sigs = np.concatenate([b[0] for b in batches])
        short = np.concatenate([b[1] for b in batches])
        dropped = 0
        for lo in range(0, len(sigs), MERGE_CHUNK):
            s, sh = sigs[lo : lo + MERGE_CHUNK], short[lo : lo + MERGE_CHUNK]
            keys = index.band_keys(s)
            best, similarity = index.match_flushed(s, sh, keys)
            for r in range(len(s)):
                flushed = (int(best[r]), float(similarity[r]))
                dropped += (
                    index.check_and_add_signature(str(lo + r), s[r], bool(sh[r]), keys[r], flushed)
                    is not None
                )
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


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] in ("--_build", "--_reference"):
        (_child_build if sys.argv[1] == "--_build" else _child_reference)(sys.argv[2])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument(
        "--text", action="append", default=[], metavar="LANG:PATH", help="your own input (repeatable)"
    )
    p.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    p.add_argument(
        "--datatrove",
        action="store_true",
        help="also run the build on datatrove's local executor (max workers)",
    )
    p.add_argument("--skip-steps", action="store_true", help="only the whole-pipeline runs")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_corpus_") as tmp:
        work = Path(tmp)
        if args.text:
            sources = []
            for i, item in enumerate(args.text):
                lang, _, path = item.partition(":")
                sources.append({"path": str(Path(path).resolve()), "format": "text", "language": lang,
                                "name": f"{lang}-{i}", "license": "CC-BY-4.0"})  # fmt: skip
        else:
            sources = generate(work / "data", args.lines)
        languages = sorted({s["language"] for s in sources})
        total = 0
        for s in sources:
            with open(s["path"], "rb") as f:
                total += sum(1 for _ in f) - (s["format"] == "tsv")
        print(f"input: {total:,} lines in {len(sources)} sources ({', '.join(languages)})")

        print("\nwhole pipeline                   wall s    records/s  peak RSS MiB  tree RSS MiB")
        print("                                                     (1 process)   (sum, sampled)")
        runs: list[tuple[str, int, str]] = [(f"langkit, {w} worker(s)", w, "local") for w in args.workers]
        if args.datatrove:
            runs.append((f"langkit, datatrove {max(args.workers)}w", max(args.workers), "datatrove"))
        results = {}
        for label, workers, executor in runs:
            spec = {
                "languages": languages,
                "sources": sources,
                "out": str(work / f"out-{executor}-{workers}"),
                "workers": workers,
                "executor": executor,
            }
            wall, rss, tree = run_child("build", spec)
            results[label] = wall
            print(f"  {label:<28}{wall:>8.1f}  {total / wall:>11,.0f}  {rss:>12,}  {tree:>12,}")
            shutil.rmtree(work / f"out-{executor}-{workers}", ignore_errors=True)
        wall, rss, tree = run_child("reference", {"sources": sources, "out": str(work / "reference.txt")})
        print(
            f"  {'reference (plain loop)':<28}{wall:>8.1f}  {total / wall:>11,.0f}  {rss:>12,}  {tree:>12,}"
        )
        for label, w in results.items():
            print(f"  ratio {label} / reference: {wall / w:.3f}x the reference's records/s")
        # After the subprocesses: a child's peak RSS counts the pages of this process it was forked
        # from, so this process must still be small when they start.
        if not args.skip_steps:
            rates, indexed = step_rates(sources, languages, work)
            print("\nstep (alone, 1 process)       records/s")
            for name, rate in rates.items():
                print(f"  {name:<28}{rate:>12,.0f}")
            print(f"  (near-dup index: {indexed:,} entries)")


if __name__ == "__main__":
    main()
