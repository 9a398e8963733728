"""Benchmark near-duplicate detection and decontamination: lines per second of
``NearDuplicateIndex.add`` and ``Decontaminator.find``, against the exact-duplicate hash step of the
corpus build (a blake2b digest in a set) run on the same lines in the same process.

    python scripts/bench_dedup.py --lines 100000
    python scripts/bench_dedup.py --text ../shared/data/bci/mtbci.gospel.bci   # real lines, repeated

Synthetic lines: 8-30 random words from a 5,000-word vocabulary of Wolof-like letters, about 120
characters; 10% are copies of an earlier line with one word replaced (near-duplicates to find).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

from langkit.corpus.dedup import Decontaminator, NearDuplicateIndex

log = logging.getLogger("bench_dedup")


def synthetic(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuwxyàéëñóŋ"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    lines: list[str] = []
    for i in range(n):
        if i > 10 and rng.random() < 0.1:
            words = lines[rng.randrange(len(lines))].split()
            words[rng.randrange(len(words))] = rng.choice(vocab)
            lines.append(" ".join(words))
        else:
            lines.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(8, 30))))
    return lines


def from_file(path: Path, n: int) -> list[str]:
    base = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    # Repeat the file with a counter so the index grows as it would on n distinct lines.
    return [f"{base[i % len(base)]} {i // len(base)}" for i in range(n)]


def timed(name: str, n: int, fn: Callable[[], int]) -> tuple[str, float, int]:
    start = time.perf_counter()
    result = fn()
    return name, n / (time.perf_counter() - start), result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--text", type=Path, help="a UTF-8 file of real lines (repeated to --lines)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lines = from_file(args.text, args.lines) if args.text else synthetic(args.lines)
    n = len(lines)

    def exact() -> int:
        seen: set[bytes] = set()
        dropped = 0
        for line in lines:
            key = hashlib.blake2b(line.encode("utf-8"), digest_size=16).digest()
            dropped += key in seen
            seen.add(key)
        return dropped

    def near() -> int:
        index = NearDuplicateIndex()
        return sum(index.add(str(i), line) is not None for i, line in enumerate(lines))

    decon = Decontaminator()
    for line in lines[:: max(1, n // 1000)]:  # about 1,000 evaluation segments
        decon.add(line)

    def contaminated() -> int:
        return sum(decon.contaminated(line) for line in lines)

    rows = [timed("exact hash (baseline)", n, exact), timed("NearDuplicateIndex.add", n, near)]
    rows.append(timed("Decontaminator.find", n, contaminated))
    mean_chars = sum(map(len, lines)) / n
    log.info("%d lines, %.0f characters on average", n, mean_chars)
    log.info("%-24s %12s %10s %10s", "step", "lines/s", "vs exact", "flagged")
    for name, rate, flagged in rows:
        log.info("%-24s %12.0f %9.3fx %10s", name, rate, rate / rows[0][1], flagged)


if __name__ == "__main__":
    main()
