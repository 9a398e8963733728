"""Near-duplicate removal (MinHash + LSH) and decontamination against evaluation texts.

Both work on the *dedup form* of a text (:func:`dedup_text`): NFC, case-folded, every punctuation
and symbol character (Unicode categories P* and S*, which include apostrophes and the ``<PHONE>``
brackets) turned into a space, whitespace collapsed. "Nanga def?" and "nanga def" are then the same
text; letters with diacritics stay distinct (ë is not e in Wolof, and Lingala tone marks are kept).

Near-duplicates (reason ``near_duplicate``)
    :class:`NearDuplicateIndex` estimates the Jaccard similarity of two texts' shingle sets with
    MinHash (Broder 1997) and finds candidates with LSH banding (Leskovec, Rajaraman & Ullman,
    *Mining of Massive Datasets*, ch. 3), the scheme of datasketch and of datatrove's MinHash
    deduplication, written here in numpy so that it runs one record at a time. Shingles are
    character n-grams (default 5) of the dedup form, or word n-grams: character shingles suit the
    sentence-length lines of these corpora, where one changed word destroys most word n-grams of a
    ten-word sentence but only about ``len(word) + n - 1`` character ones. A record whose estimated
    similarity to a record kept before it (same language, any source) is at least ``threshold`` is
    dropped, and points to that record (``duplicate_of``). Candidates come from ``bands`` bands of
    ``num_perm / bands`` MinHash values each (the S-curve threshold is about
    ``(1 / bands) ** (bands / num_perm)``, 0.71 for 16 x 8, so candidates at 0.8 are found with
    probability 0.95 and above 0.85 with 0.99); every candidate is then checked against the stored
    signature, so pairs below the threshold are not dropped for sharing one band. The estimate has a
    standard deviation of about ``sqrt(J (1 - J) / num_perm)``: 0.035 at J = 0.8 with 128 values.
    A text of fewer than ``min_words`` (5) words is a near-duplicate only of one with the same
    shingles (similarity 1.0: the same words up to case and punctuation), because on a short line one
    character moves the similarity a lot: "Matie 1" and "Matie 10" (two Gospel headings) are at 0.75,
    "wol text 1" and "wol text 10" at 0.86.

    Measured on real dev text (exact Jaccard of character 5-grams): no pair of the 997 FLORES-200 dev
    sentences of Wolof or Swahili reaches 0.7; the mtBCI Baoulé Gospel verses have 2 pairs at 0.8 or
    more (a verse repeated with its number and one letter changed, and two parallel verses of the
    parable of the talents) and the mtBCI translatewiki messages 56 (mostly the same message with and
    without ``: $1``).

    Parallel records are keyed on the target text *and* the pivot text: the pivot's shingles join
    the set, salted so they never equal a target shingle. This is the rule of the exact ``duplicate``
    step (language, text and pivot): a sentence with a second, different translation is kept (it is a
    second reference, not a copy), one with a near-identical translation is dropped, and a
    monolingual line is never a near-duplicate of a pair (about half of the pair's shingles are the
    pivot's), so a translation pair is never lost to a line of plain text read earlier.

    Memory grows with the records kept (an index must remember them): per indexed record a
    ``num_perm``-value uint32 signature (512 bytes at 128) and one entry per band in the band tables
    (about 90 bytes each in a Python dict): 2.1 KB at the defaults (measured on 100,000 lines), so a
    million kept lines hold about 2 GB. Speed: about 4,600 lines of 120 characters per second on one
    shared core (``scripts/bench_dedup.py``), most of it numpy call overhead on short arrays.

Decontamination (reason ``decontaminated``)
    :class:`Decontaminator` holds evaluation texts (the corpus's own dev and test pairs, both sides,
    and any files in ``corpus.dedup.decontaminate_against``) and says whether a training text
    overlaps one. Word n-grams of the dedup form, ``ngram`` = 8 by default: long enough that common
    phrases of a language do not match (GPT-3 used 13-grams on documents; these are sentences), short
    enough that a test sentence copied into a longer training line is caught. A training text is
    contaminated when

    - it equals an evaluation text (any length, "Merci beaucoup." included),
    - it contains a whole evaluation text of ``min_words`` (3; ``corpus.dedup.decontaminate_min_words``)
      to ``ngram - 1`` words, or
    - it shares a word ``ngram``-gram with a longer evaluation text.

    Evaluation texts under ``min_words`` words only match whole: "Bonjour." must not remove every
    training line that says bonjour. The check is across languages: FLORES-style corpora are
    multi-way parallel, and the French side of a Wolof test pair seen as the pivot of a Lingala
    training pair is the reference of the Wolof-to-French test, leaked.
"""

from __future__ import annotations

import unicodedata
import zlib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from langkit.utils import get_logger

__all__ = ["REASONS", "Decontaminator", "Match", "NearDuplicateIndex", "dedup_text"]

log = get_logger("corpus.dedup")

REASONS = {
    "near_duplicate": "MinHash similarity to a record kept before it at or above corpus.dedup.threshold",
    "decontaminated": "training text overlapping a dev/test or external evaluation text (word n-grams)",
}
"""The drop reasons of this module, with the one-line descriptions the dataset card shows."""

_U64 = np.uint64
_POLY = _U64(0x100000001B3)  # odd base of the rolling polynomial hash of shingles (the 64-bit FNV prime)
_PIVOT_SALT = _U64(0x9E3779B97F4A7C15)  # xor-ed into pivot shingles so they never equal target ones
_BLOCK = 4096  # signatures are stored in blocks of this many rows, so the store grows without copies


@lru_cache(maxsize=1)
def _punctuation_table() -> str:
    # For str.translate: character i of this string replaces code point i. Punctuation (P*) and
    # symbols (S*) of planes 0 and 1 (emoji included) become a space, everything else itself; code
    # points past the table are left alone. Built once (about 50 ms, 0.5 MB); a str table translates
    # about 2.5x faster than a dict of the same mapping (no int object per character).
    return "".join(" " if unicodedata.category(c := chr(cp))[0] in "PS" else c for cp in range(0x20000))


def dedup_text(text: str) -> str:
    """The form near-duplicates and contamination are judged on: NFC, case-folded, punctuation and
    symbols as spaces, whitespace collapsed (``"Nanga def?"`` -> ``"nanga def"``)."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().translate(_punctuation_table()).split())


def _mix32(h: np.ndarray) -> np.ndarray:
    """32 well-mixed bits of 64-bit rolling hashes ([n] uint64 -> [n] uint32): one xor-shift-multiply
    round of splitmix64's finalizer, keeping the high half of the product (where every input bit
    reaches; uint64 arithmetic wraps)."""
    h = h ^ (h >> _U64(31))
    h *= _U64(0xBF58476D1CE4E5B9)
    return (h >> _U64(32)).astype(np.uint32)


def _rolling(units: np.ndarray, n: int) -> np.ndarray:
    """Polynomial hashes of every window of ``n`` consecutive units ([len - n + 1] uint64), or of the
    whole sequence when it is shorter than ``n`` ([1]): a short text is one shingle, not none."""
    n = min(n, len(units))
    # A [windows, n] view of the contiguous units (no copy; built directly, sliding_window_view costs
    # more than the product here) times [n] powers of _POLY: one C loop instead of n numpy calls.
    windows = np.ndarray((len(units) - n + 1, n), dtype=np.uint64, buffer=units, strides=(8, 8))
    return windows @ _powers(n)


@lru_cache(maxsize=16)
def _powers(n: int) -> np.ndarray:
    return np.array([pow(int(_POLY), n - 1 - k, 2**64) for k in range(n)], dtype=np.uint64)


class Match(NamedTuple):
    """An earlier record a text near-duplicates: its key and the estimated Jaccard similarity."""

    key: str
    similarity: float


class NearDuplicateIndex:
    """MinHash + LSH index of the texts kept so far (one per language).

    ``add(key, text, pivot)`` returns the key of an earlier indexed text whose estimated Jaccard
    similarity is at least ``threshold`` (the new text is then not indexed: the caller drops it), or
    None after indexing the text. Deterministic: the hash functions come from ``seed`` and the string
    hashing is fixed (no Python ``hash``), so the same input gives the same decisions in every run.
    """

    def __init__(
        self,
        threshold: float = 0.8,
        num_perm: int = 128,
        bands: int = 16,
        shingle: int = 5,
        shingle_unit: str = "char",
        min_words: int = 5,
        seed: int = 0,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if num_perm < 1 or bands < 1 or num_perm % bands:
            raise ValueError(f"num_perm ({num_perm}) must be a positive multiple of bands ({bands})")
        if shingle < 1 or shingle_unit not in ("char", "word"):
            raise ValueError(
                f"shingle must be >= 1 and shingle_unit char or word, got {shingle} {shingle_unit!r}"
            )
        self.threshold = threshold
        self.num_perm = num_perm
        self.bands = bands
        self.rows = num_perm // bands
        self.shingle = shingle
        self.shingle_unit = shingle_unit
        self.min_words = min_words
        rng = np.random.default_rng(seed)  # PCG64: the same numbers on every platform
        # The i-th permutation of the 32-bit shingle hashes x (already well mixed by _mix32) is
        # (a_i * x + b_i) mod 2^32 with a_i odd: a bijection of the 32-bit values, computed for all
        # functions at once in uint32, which numpy vectorizes (uint64 products it does not). [num_perm].
        self._a = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32) | np.uint32(1)
        self._b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32)
        # Random odd uint64 weights that fold a band's rows into one table key ([rows]); two different
        # bands colliding only costs one more candidate to check against the stored signature.
        self._fold = rng.integers(0, 2**63, size=self.rows, dtype=np.uint64) * _U64(2) + _U64(1)
        self._buffer = np.empty((0, num_perm), dtype=np.uint32)  # [shingles, num_perm], reused
        self._tables: list[dict[int, int | list[int]]] = [{} for _ in range(bands)]
        self._blocks: list[np.ndarray] = []  # [_BLOCK, num_perm] uint32 each
        self._keys: list[str] = []
        self._short = bytearray()  # 1 where the indexed record's text has fewer than min_words words

    def __len__(self) -> int:
        return len(self._keys)

    def _shingles(self, form: str) -> np.ndarray:
        """64-bit hashes of the shingles of a non-empty dedup form."""
        if self.shingle_unit == "char":
            units = np.frombuffer(form.encode("utf-32-le"), dtype="<u4").astype(np.uint64)
        else:
            # crc32, not hash(): Python salts str hashes per process, which would break determinism.
            units = np.array([zlib.crc32(w.encode("utf-8")) for w in form.split()], dtype=np.uint64)
        return _rolling(units, self.shingle)

    def signature(self, text: str, pivot: str = "") -> np.ndarray | None:
        """The MinHash signature ([num_perm] uint32) of ``text`` and ``pivot`` together, or None when
        neither has any letter, digit or other non-punctuation character."""
        return self._prepare(text, pivot)[0]

    def _prepare(self, text: str, pivot: str) -> tuple[np.ndarray | None, bool]:
        """The signature, and whether the text is short (fewer than ``min_words`` words)."""
        form = dedup_text(text)
        parts = []
        if form:
            parts.append(self._shingles(form))
        if pivot and (pivot_form := dedup_text(pivot)):
            parts.append(self._shingles(pivot_form) ^ _PIVOT_SALT)
        short = form.count(" ") + 1 < self.min_words if form else True
        if not parts:
            return None, short
        x = _mix32(parts[0] if len(parts) == 1 else np.concatenate(parts))  # [shingles] uint32
        if len(x) > len(self._buffer):
            self._buffer = np.empty((max(len(x), 2 * len(self._buffer)), self.num_perm), dtype=np.uint32)
        # [shingles, num_perm] (inner loop over the functions: contiguous, vectorized), reusing one
        # buffer so long texts do not allocate and fault in fresh pages; min over the shingles.
        h = np.multiply(x[:, None], self._a, out=self._buffer[: len(x)])
        np.add(h, self._b, out=h)
        return h.min(axis=0), short

    def _band_hashes(self, sig: np.ndarray) -> list[int]:
        # [bands, rows] @ [rows] -> one uint64 key per band (wrapping arithmetic).
        return (sig.reshape(self.bands, self.rows).astype(np.uint64) @ self._fold).tolist()

    def _stored(self, i: int) -> np.ndarray:
        return self._blocks[i // _BLOCK][i % _BLOCK]

    def find(self, text: str, pivot: str = "") -> Match | None:
        """The best earlier near-duplicate of ``text`` (+ ``pivot``), without indexing it."""
        sig, short = self._prepare(text, pivot)
        return None if sig is None else self._find(sig, short, self._band_hashes(sig))

    def _find(self, sig: np.ndarray, short: bool, hashes: list[int]) -> Match | None:
        candidates: set[int] = set()
        for found in [table.get(h) for table, h in zip(self._tables, hashes, strict=True)]:
            if found is None:
                continue
            if isinstance(found, int):
                candidates.add(found)
            else:
                candidates.update(found)
        if not candidates:
            return None
        order = sorted(candidates)
        stored = np.stack([self._stored(i) for i in order])
        similarity = np.count_nonzero(stored == sig, axis=1) / self.num_perm
        # A short text (either side) is a near-duplicate only of the same shingles: on a line of a
        # few words one character moves the similarity a lot ("Matie 1" / "Matie 10": 0.75).
        needed = np.where(np.array([short or bool(self._short[i]) for i in order]), 1.0, self.threshold)
        similarity = np.where(similarity >= needed, similarity, -1.0)
        best = int(np.argmax(similarity))  # the first (earliest) of the most similar
        if similarity[best] < 0:
            return None
        return Match(self._keys[order[best]], float(similarity[best]))

    def check_and_add(self, key: str, text: str, pivot: str = "") -> Match | None:
        """The earlier near-duplicate of this record, or None after indexing it under ``key``."""
        sig, short = self._prepare(text, pivot)
        if sig is None:
            return None
        hashes = self._band_hashes(sig)
        match = self._find(sig, short, hashes)
        if match is not None:
            return match
        i = len(self._keys)
        if i % _BLOCK == 0:
            self._blocks.append(np.empty((_BLOCK, self.num_perm), dtype=np.uint32))
        self._blocks[-1][i % _BLOCK] = sig
        self._keys.append(key)
        self._short.append(short)
        for table, h in zip(self._tables, hashes, strict=True):
            # Most buckets hold one record: an int, not a list, keeps the table small.
            found = table.get(h)
            if found is None:
                table[h] = i
            elif isinstance(found, int):
                table[h] = [found, i]
            else:
                found.append(i)
        return None

    def add(self, key: str, text: str, pivot: str = "") -> str | None:
        """The key of an earlier near-duplicate of this record (drop it), or None (kept and indexed)."""
        match = self.check_and_add(key, text, pivot)
        return None if match is None else match.key


class Decontaminator:
    """Evaluation texts as word n-grams; :meth:`find` / :meth:`contaminated` test a training text.

    ``ngram``: words per n-gram shared with a long evaluation text. ``min_words``: an evaluation text
    of ``min_words`` to ``ngram - 1`` words matches when contained whole; a shorter one only when the
    training text equals it. Every text is compared in its :func:`dedup_text` form.
    """

    def __init__(self, ngram: int = 8, min_words: int = 3) -> None:
        if ngram < 1 or not 1 <= min_words <= ngram:
            raise ValueError(f"need ngram >= 1 and 1 <= min_words <= ngram, got {ngram}, {min_words}")
        self.ngram = ngram
        self.min_words = min_words
        self._ngrams: dict[str, str] = {}  # n-gram of a long evaluation text -> where it comes from
        self._short: dict[str, str] = {}  # a whole evaluation text of fewer than ngram words -> origin
        self._short_lengths: set[int] = set()  # word counts >= min_words present in _short
        self.segments = 0

    def __len__(self) -> int:
        return self.segments

    def add(self, text: str, origin: str = "") -> None:
        """Add one evaluation text; ``origin`` (e.g. ``test:wol-demo:12`` or ``file:line``) is what a
        contaminated training record is said to overlap."""
        words = dedup_text(text).split()
        if not words:
            return
        self.segments += 1
        if len(words) < self.ngram:
            self._short.setdefault(" ".join(words), origin)
            if len(words) >= self.min_words:
                self._short_lengths.add(len(words))
            return
        for i in range(len(words) - self.ngram + 1):
            self._ngrams.setdefault(" ".join(words[i : i + self.ngram]), origin)

    def add_texts(self, texts: Iterable[tuple[str, str]]) -> None:
        """Add ``(text, origin)`` pairs."""
        for text, origin in texts:
            self.add(text, origin)

    def add_file(self, path: str | Path) -> int:
        """Add a plain-text file, one segment per line (UTF-8, BOM allowed); return the segments read."""
        before = self.segments
        with open(path, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, start=1):
                self.add(line, f"{path}:{number}")
        log.info("decontamination: %d segments from %s", self.segments - before, path)
        return self.segments - before

    def find(self, text: str) -> tuple[str, str] | None:
        """The overlap of ``text`` with an evaluation text, as (the shared words, their origin), or None."""
        words = dedup_text(text).split()
        if not words:
            return None
        whole = " ".join(words)
        if whole in self._short:
            return whole, self._short[whole]
        for k in sorted(self._short_lengths):
            for i in range(len(words) - k + 1):
                gram = " ".join(words[i : i + k])
                if gram in self._short:
                    return gram, self._short[gram]
        if self._ngrams:
            for i in range(len(words) - self.ngram + 1):
                gram = " ".join(words[i : i + self.ngram])
                if gram in self._ngrams:
                    return gram, self._ngrams[gram]
        return None

    def contaminated(self, text: str) -> bool:
        """True when ``text`` overlaps an evaluation text (see the module docstring for the rules)."""
        return self.find(text) is not None
