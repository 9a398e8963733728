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

    Memory grows with the records kept (an index must remember them), compactly
    (:mod:`langkit.corpus.stores`): per indexed record one 8-byte entry per band in sorted numpy
    arrays (128 bytes at 16 bands), its key (about 25 bytes) and a byte; its ``num_perm``-value uint32
    signature (512 bytes at 128) in a file when the index has one (the corpus build's), with the low
    byte of each value in memory (128 bytes: a candidate that disagrees on too many of them is
    rejected without reading its signature), else in memory. Band keys are the high 32 bits of the folded band, so unrelated records share a key with
    probability about ``n / 2^32`` per band: one more candidate to check, never a wrong drop.
    Signatures are computed in batches (:meth:`MinHasher.signatures`, one set of numpy calls per
    batch; about 40,000 lines of 60 characters a second on one core), in the corpus build's
    per-source phase, so its worker processes share that work; the merge only looks up band keys,
    a chunk of records at a time (:meth:`NearDuplicateIndex.match_flushed`).

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

from langkit.corpus.stores import BandTable, SignatureStore, StringTable
from langkit.utils import get_logger

__all__ = ["REASONS", "Decontaminator", "Match", "MinHasher", "NearDuplicateIndex", "dedup_text"]

log = get_logger("corpus.dedup")

REASONS = {
    "near_duplicate": "MinHash similarity to a record kept before it at or above corpus.dedup.threshold",
    "decontaminated": "training text overlapping a dev/test or external evaluation text (word n-grams)",
}
"""The drop reasons of this module, with the one-line descriptions the dataset card shows."""

_U64 = np.uint64
_POLY = _U64(0x100000001B3)  # odd base of the rolling polynomial hash of shingles (the 64-bit FNV prime)
_PIVOT_SALT = _U64(0x9E3779B97F4A7C15)  # xor-ed into pivot shingles so they never equal target ones


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


@lru_cache(maxsize=16)
def _powers(n: int) -> np.ndarray:
    return np.array([pow(int(_POLY), n - 1 - k, 2**64) for k in range(n)], dtype=np.uint64)


class Match(NamedTuple):
    """An earlier record a text near-duplicates: its key and the estimated Jaccard similarity."""

    key: str
    similarity: float


class MinHasher:
    """MinHash signatures of texts (and their pivots), many at a time.

    A record's shingles are the ``shingle``-unit windows of its dedup form (characters or words), the
    pivot's xor-ed with a salt; a text shorter than one window is one shingle. The i-th hash function
    is ``(a_i * x + b_i) mod 2^32`` of the 32-bit mixed shingle hash ``x``. Deterministic: the
    functions come from ``seed`` and no Python ``hash`` is involved, so the corpus build's workers
    (other processes, other machines) compute the same signatures."""

    def __init__(
        self,
        num_perm: int = 128,
        shingle: int = 5,
        shingle_unit: str = "char",
        min_words: int = 5,
        seed: int = 0,
    ) -> None:
        if shingle < 1 or shingle_unit not in ("char", "word"):
            raise ValueError(
                f"shingle must be >= 1 and shingle_unit char or word, got {shingle} {shingle_unit!r}"
            )
        self.num_perm = num_perm
        self.shingle = shingle
        self.shingle_unit = shingle_unit
        self.min_words = min_words
        rng = np.random.default_rng(seed)  # PCG64: the same numbers on every platform
        # a_i odd: a bijection of the 32-bit values, computed for all functions at once in uint32,
        # which numpy vectorizes (uint64 products it does not). [num_perm] each.
        self.a = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32) | np.uint32(1)
        self.b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32)
        self._buffer = np.empty((0, num_perm), dtype=np.uint32)  # [shingles, num_perm], reused
        self._wide = np.empty((num_perm, 0), dtype=np.uint32)  # [num_perm, windows], for batches

    def signature(self, text: str, pivot: str = "") -> tuple[np.ndarray | None, bool]:
        """The signature ([num_perm] uint32) of one record, or None when neither text has a letter,
        digit or other non-punctuation character; and whether the text is short (fewer than
        ``min_words`` words)."""
        # The same hashes as signatures(), without its batch bookkeeping (overhead on one record).
        form = dedup_text(text)
        short = form.count(" ") + 1 < self.min_words if form else True
        parts = []
        if form:
            parts.append(self._windows(form))
        if pivot and (pivot_form := dedup_text(pivot)):
            parts.append(self._windows(pivot_form) ^ _PIVOT_SALT)
        if not parts:
            return None, short
        x = _mix32(parts[0] if len(parts) == 1 else np.concatenate(parts))  # [shingles] uint32
        if len(x) > len(self._buffer):
            self._buffer = np.empty((max(len(x), 2 * len(self._buffer)), self.num_perm), dtype=np.uint32)
        h = np.multiply(x[:, None], self.a, out=self._buffer[: len(x)])
        np.add(h, self.b, out=h)
        return h.min(axis=0), short

    def _windows(self, form: str) -> np.ndarray:
        """[windows] uint64 polynomial hashes of one non-empty dedup form's shingles."""
        n = self.shingle
        if self.shingle_unit == "char":
            units = np.frombuffer(form.encode("utf-32-le"), dtype="<u4").astype(np.uint64)
        else:
            units = np.array([zlib.crc32(w.encode("utf-8")) for w in form.split()], dtype=np.uint64)
        if len(units) < n:  # left-padded with zeros: one window, the hash of the whole text
            units = np.concatenate((np.zeros(n - len(units), dtype=np.uint64), units))
        windows = np.ndarray((len(units) - n + 1, n), dtype=np.uint64, buffer=units, strides=(8, 8))
        return windows @ _powers(n)

    def signatures(self, records: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Signatures of many ``(text, pivot)`` records: ``[k, num_perm]`` uint32 for the ``k``
        records that have one, in order; ``has`` ([n] bool) says which; ``short`` ([n] bool) which
        texts have fewer than ``min_words`` words. The numpy work is done once for the whole batch
        (per record it would be call overhead on short arrays)."""
        n = self.shingle
        segments: list[str] = []  # the dedup forms, in record order (text, then pivot)
        salted: list[bool] = []
        owner: list[int] = []
        short = np.zeros(len(records), dtype=bool)
        for r, (text, pivot) in enumerate(records):
            form = dedup_text(text)
            short[r] = form.count(" ") + 1 < self.min_words if form else True
            if form:
                segments.append(form)
                salted.append(False)
                owner.append(r)
            if pivot and (pivot_form := dedup_text(pivot)):
                segments.append(pivot_form)
                salted.append(True)
                owner.append(r)
        has = np.zeros(len(records), dtype=bool)
        if not segments:
            return np.zeros((0, self.num_perm), dtype=np.uint32), has, short
        has[owner] = True
        if self.shingle_unit == "char":
            # A text shorter than a window is left-padded with zeros: the window's polynomial hash is
            # then the hash of the whole short text (leading zero terms add nothing).
            padded = [s if len(s) >= n else "\x00" * (n - len(s)) + s for s in segments]
            lengths = np.array([len(s) for s in padded], dtype=np.int64)
            units = np.frombuffer("".join(padded).encode("utf-32-le"), dtype="<u4").astype(np.uint64)
        else:
            # crc32, not hash(): Python salts str hashes per process, which would break determinism.
            words = [[zlib.crc32(w.encode("utf-8")) for w in s.split()] for s in segments]
            words = [[0] * (n - len(w)) + w if len(w) < n else w for w in words]
            lengths = np.array([len(w) for w in words], dtype=np.int64)
            units = np.fromiter((u for w in words for u in w), dtype=np.uint64, count=int(lengths.sum()))
        # Every window of the concatenation ([T - n + 1] uint64; a [windows, n] strided view times the
        # [n] powers: one C loop), then only those inside one segment.
        windows = np.ndarray((len(units) - n + 1, n), dtype=np.uint64, buffer=units, strides=(8, 8))
        every = windows @ _powers(n)
        counts = lengths - n + 1  # windows per segment, >= 1
        starts = np.cumsum(lengths) - lengths
        first = np.cumsum(counts) - counts  # each segment's first window in the selection
        total = int(counts.sum())
        pick = np.repeat(starts, counts) + (np.arange(total) - np.repeat(first, counts))
        hashes = every[pick]
        hashes ^= np.repeat(np.where(salted, _PIVOT_SALT, _U64(0)), counts)
        x = _mix32(hashes)  # [windows] uint32
        # Each record's windows are contiguous (segments are in record order): its first one.
        owner_arr = np.array(owner, dtype=np.int64)
        new_record = np.ones(len(owner_arr), dtype=bool)
        new_record[1:] = owner_arr[1:] != owner_arr[:-1]
        bounds = np.append(first[new_record], total)  # [k + 1] window offsets of the records
        sigs = np.empty((len(bounds) - 1, self.num_perm), dtype=np.uint32)
        # Records in groups of at most 65,536 windows (a 32 MB buffer at 128 functions), reused.
        limit = max(1 << 16, int(np.diff(bounds).max()))
        if self._wide.shape[1] < limit:
            self._wide = np.empty((self.num_perm, limit), dtype=np.uint32)
        r = 0
        while r < len(bounds) - 1:
            end = max(int(np.searchsorted(bounds, bounds[r] + limit, side="right")) - 1, r + 1)
            lo, hi = int(bounds[r]), int(bounds[end])
            # [num_perm, windows]: each function's values of a record are contiguous, so the min per
            # record (reduceat along the rows) runs over contiguous memory: 5x faster than [windows, P].
            h = np.multiply(self.a[:, None], x[None, lo:hi], out=self._wide[:, : hi - lo])
            np.add(h, self.b[:, None], out=h)
            sigs[r:end] = np.minimum.reduceat(h, bounds[r:end] - lo, axis=1).T
            r = end
        return sigs, has, short


_FLUSH = 8192  # records indexed one at a time between two flushes of the pending tables
_QUERY_BLOCK = 4096  # records looked up together in the flushed band tables
_PAIR_BLOCK = 32_768  # candidate pairs checked together (two [pairs, num_perm] arrays: 16 MB each at 128)


class NearDuplicateIndex:
    """MinHash + LSH index of the texts kept so far (one per language).

    ``add(key, text, pivot)`` returns the key of an earlier indexed text whose estimated Jaccard
    similarity is at least ``threshold`` (the new text is then not indexed: the caller drops it), or
    None after indexing the text. Deterministic: the hash functions come from ``seed`` and the string
    hashing is fixed (no Python ``hash``), so the same input gives the same decisions in every run.

    Storage (:mod:`langkit.corpus.stores`): per indexed record, one 8-byte entry in each band's
    sorted table (``bands`` x 8 bytes), its key in a string table and a byte; the signature in
    ``signature_file`` (512 bytes at 128 functions) when given, else in memory. Records indexed since
    the last :meth:`flush` are also in small dicts, so one record at a time is cheap; the corpus build
    instead looks up a few thousand records at once (:meth:`match_flushed`), then decides them in
    order against the records of the same batch (:meth:`check_and_add_signature`), then flushes.
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
        signature_file: Path | None = None,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if num_perm < 1 or bands < 1 or num_perm % bands:
            raise ValueError(f"num_perm ({num_perm}) must be a positive multiple of bands ({bands})")
        self.hasher = MinHasher(num_perm, shingle, shingle_unit, min_words, seed)
        self.threshold = threshold
        self.num_perm = num_perm
        self.bands = bands
        self.rows = num_perm // bands
        # Random odd uint64 weights that fold a band's rows into one key, of which the high 32 bits
        # are kept ([rows]); two different rows colliding only costs one more candidate to check
        # against the stored signature.
        fold = np.random.default_rng((seed, 1)).integers(0, 2**63, size=self.rows, dtype=np.uint64)
        self._fold = fold * _U64(2) + _U64(1)
        self._tables = [BandTable() for _ in range(bands)]
        self._signatures = SignatureStore(num_perm, signature_file)
        # The records indexed since the last flush: band entries keyed by ``band << 32 | key`` (an int,
        # or a list when several records share one), their signatures, and their [bands] key rows.
        self._band_tags = np.arange(bands, dtype=np.uint64) << _U64(32)
        self._pending: dict[int, int | list[int]] = {}
        self._pending_sigs: dict[int, np.ndarray] = {}
        self._pending_keys: list[np.ndarray] = []  # [k, bands] key rows, k >= 1 each
        self._pending_count = 0
        self._keys = StringTable()
        self._short = bytearray()  # 1 where the indexed record's text has fewer than min_words words

    def __len__(self) -> int:
        return len(self._keys)

    def _short_array(self) -> np.ndarray:
        """[indexed] bool view of which indexed records are short (no copy)."""
        return np.frombuffer(self._short, dtype=np.bool_)

    def signature(self, text: str, pivot: str = "") -> np.ndarray | None:
        """The MinHash signature ([num_perm] uint32) of ``text`` and ``pivot`` together, or None when
        neither has any letter, digit or other non-punctuation character."""
        return self.hasher.signature(text, pivot)[0]

    def band_keys(self, sigs: np.ndarray) -> np.ndarray:
        """[n, bands] uint64 keys (below 2^32) of [n, num_perm] signatures: each band's rows folded."""
        folded = sigs.reshape(len(sigs), self.bands, self.rows).astype(np.uint64) @ self._fold
        return folded >> _U64(32)

    def match_flushed(
        self, sigs: np.ndarray, short: np.ndarray, keys: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """For [n, num_perm] signatures (``short`` [n] bool, ``keys`` from :meth:`band_keys`), the
        best match among the records indexed before the last :meth:`flush`: [n] record numbers (-1:
        none) and [n] similarities. Best: the most similar at or above the needed similarity
        (``threshold``, or 1.0 when either text is short), the earliest of equals.

        Memory is bounded whatever the number of candidates (text with a small vocabulary can give
        thousands per record): queries go in blocks of ``_QUERY_BLOCK`` rows, and their candidate
        pairs are checked ``_PAIR_BLOCK`` at a time."""
        n = len(sigs)
        best = np.full(n, -1, dtype=np.int64)
        best_sim = np.zeros(n, dtype=np.float64)
        kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        total = len(self._keys) + 1
        low = sigs.astype(np.uint8)  # the queries' sketches
        short_stored = self._short_array().copy()  # a copy: the bytearray grows after this call
        for q in range(0, n, _QUERY_BLOCK):
            block = keys[q : q + _QUERY_BLOCK]
            found = [table.lookup_flushed(block[:, b]) for b, table in enumerate(self._tables)]
            rows = np.concatenate([f[0] for f in found])
            if not len(rows):
                continue
            records = np.concatenate([f[1] for f in found])
            del found
            if self._signatures.has_sketch:
                # Equal values have equal low bytes: the sketches' agreement bounds the signatures'
                # from above, so a pair below the needed similarity on sketches is below it for real
                # and its signature is never read. Checked before removing the pairs found in several
                # bands: nearly all pairs go here, and most were found in one band only.
                survivors: list[np.ndarray] = []
                for p in range(0, len(rows), _PAIR_BLOCK):
                    r, c = rows[p : p + _PAIR_BLOCK], records[p : p + _PAIR_BLOCK]
                    bound = np.count_nonzero(self._signatures.sketch_rows(c) == low[r + q], axis=1)
                    needed = np.where(short[r + q] | short_stored[c], 1.0, self.threshold)
                    survivors.append(p + np.flatnonzero(bound / self.num_perm >= needed))
                keep = np.concatenate(survivors)
                rows, records = rows[keep], records[keep]
            pairs = np.unique((rows + q) * total + records)  # sorted by row, then record; no repeats
            del rows, records
            for p in range(0, len(pairs), _PAIR_BLOCK):
                part = pairs[p : p + _PAIR_BLOCK]
                rows, records = part // total, part % total
                needed = np.where(short[rows] | short_stored[records], 1.0, self.threshold)
                unique, inverse = np.unique(records, return_inverse=True)
                similarity = (
                    np.count_nonzero(self._signatures.rows(unique)[inverse] == sigs[rows], axis=1)
                    / self.num_perm
                )
                ok = similarity >= needed
                if ok.any():
                    kept.append((rows[ok], records[ok], similarity[ok]))
        if not kept:
            return best, best_sim
        rows = np.concatenate([k[0] for k in kept])
        records = np.concatenate([k[1] for k in kept])
        similarity = np.concatenate([k[2] for k in kept])
        # Per row, the highest similarity, then the lowest record number.
        order = np.lexsort((records, -similarity, rows))
        rows, records, similarity = rows[order], records[order], similarity[order]
        first = np.ones(len(rows), dtype=bool)
        first[1:] = rows[1:] != rows[:-1]
        best[rows[first]] = records[first]
        best_sim[rows[first]] = similarity[first]
        return best, best_sim

    def _match_pending(self, sig: np.ndarray, short: bool, tagged: list[int]) -> tuple[int, float]:
        candidates: set[int] = set()
        for found in [self._pending.get(t) for t in tagged]:
            if found is None:
                continue
            if isinstance(found, int):
                candidates.add(found)
            else:
                candidates.update(found)
        if not candidates:
            return -1, 0.0
        order = sorted(candidates)
        return self._best(sig, short, order, np.stack([self._pending_sigs[i] for i in order]))

    def sharing_rows(self, keys: np.ndarray) -> np.ndarray:
        """[n] bool: which rows of a batch ([n, bands] keys from :meth:`band_keys`) share a key in
        some band with another row of the batch. A row that shares none can be decided with
        ``alone=True``: no record pending with it can be its candidate, nor it theirs."""
        tags = (keys | self._band_tags).ravel()
        _, inverse, counts = np.unique(tags, return_inverse=True, return_counts=True)
        return np.asarray((counts[inverse.reshape(-1)] > 1).reshape(keys.shape).any(axis=1), dtype=bool)

    def similar_pairs(
        self, sigs: np.ndarray, short: np.ndarray, keys: np.ndarray, limit: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The pairs of rows of a batch (``sigs`` [n, num_perm], ``short`` [n], ``keys`` [n, bands]
        from :meth:`band_keys`) that share a band key and reach the needed similarity (``threshold``,
        1.0 when either text is short): ``(earlier, later, similarity)``, [pairs] each, sorted by the
        later row then the earlier. What :meth:`check_and_add_signature` would find among the records
        pending with it, for every row at once; the caller keeps the pairs whose earlier row was
        indexed. None when rows sharing a key would give more than ``limit`` pairs (many copies of
        one text): decide those one at a time."""
        n = len(sigs)
        tags = (keys | self._band_tags).ravel()  # [n * bands], row-major: rows ascending per tag
        order = np.argsort(tags, kind="stable")
        tags, rows = tags[order], (order // self.bands).astype(np.int64)
        same = tags[1:] == tags[:-1]  # [n * bands - 1]: position k and k + 1 hold one key
        if not same.any():
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0, dtype=np.float64)
        # Group of every position; a group of m rows gives m (m - 1) / 2 pairs.
        group = np.concatenate(([0], np.cumsum(~same)))
        sizes = np.bincount(group)
        if int((sizes * (sizes - 1) // 2).sum()) > limit:
            return None
        firsts: list[np.ndarray] = []
        seconds: list[np.ndarray] = []
        for d in range(1, int(sizes.max())):  # positions k and k + d of one group
            hit = np.flatnonzero(group[d:] == group[:-d])
            firsts.append(rows[hit])
            seconds.append(rows[hit + d])
        pair = np.unique(np.concatenate(seconds) * n + np.concatenate(firsts))  # by later row, then earlier
        later, earlier = pair // n, pair % n
        similarity = np.empty(len(pair), dtype=np.float64)
        for lo in range(0, len(pair), _PAIR_BLOCK):
            e, l_ = earlier[lo : lo + _PAIR_BLOCK], later[lo : lo + _PAIR_BLOCK]
            similarity[lo : lo + _PAIR_BLOCK] = np.count_nonzero(sigs[e] == sigs[l_], axis=1) / self.num_perm
        ok = similarity >= np.where(short[earlier] | short[later], 1.0, self.threshold)
        return earlier[ok], later[ok], similarity[ok]

    def check_and_add_signature(
        self,
        key: str,
        sig: np.ndarray,
        short: bool,
        keys: np.ndarray,
        flushed: tuple[int, float] = (-1, 0.0),
        alone: bool = False,
    ) -> Match | None:
        """Decide one record from its signature, band keys and best flushed match (from
        :meth:`match_flushed`; records of the last flush and earlier): its match among every
        indexed record, or None after indexing it under ``key``. ``alone``: no other record decided
        before the next :meth:`flush` shares a band key with it (:meth:`sharing_rows`), so the
        records pending since the last flush are not searched and it is not put among them (the
        flush still indexes it); :meth:`find` must not be called before that flush."""
        if alone:
            tagged: list[int] = []
            record, similarity = -1, 0.0
        else:
            tagged = (keys | self._band_tags).tolist()
            record, similarity = self._match_pending(sig, short, tagged)
        # Flushed records come before pending ones: on equal similarity the flushed one is earlier.
        if flushed[0] >= 0 and (record < 0 or flushed[1] >= similarity):
            record, similarity = flushed
        if record >= 0:
            return Match(self._keys[record], similarity)
        i = len(self._keys)
        self._keys.append(key)
        self._short.append(short)
        self._signatures.append(sig)
        self._pending_keys.append(keys[None])
        self._pending_count += 1
        if alone:
            return None
        self._pending_sigs[i] = sig
        pending = self._pending
        for t in tagged:
            # Most entries hold one record: an int, not a list, keeps the dict small.
            found = pending.get(t)
            if found is None:
                pending[t] = i
            elif isinstance(found, int):
                pending[t] = [found, i]
            else:
                found.append(i)
        return None

    def add_signatures(self, keys: list[str], sigs: np.ndarray, short: np.ndarray, band_keys: np.ndarray) -> None:
        """Index many records at once, in order, as :meth:`check_and_add_signature` with ``alone``
        would one by one: records already decided to be kept (``sigs`` [k, num_perm], ``short`` [k],
        ``band_keys`` [k, bands] from :meth:`band_keys`), sharing no band key with any other record
        indexed before the next :meth:`flush`, or decided against them by the caller."""
        if not len(keys):
            return
        self._keys.extend(keys)
        self._short.extend(np.asarray(short, dtype=np.uint8).tobytes())
        self._signatures.extend(sigs)
        self._pending_keys.append(band_keys)
        self._pending_count += len(keys)

    def key(self, record: int) -> str:
        """The key an indexed record was added under."""
        return self._keys[record]

    def flush(self) -> None:
        """Move the records indexed since the last flush into the sorted band tables."""
        if not self._pending_keys:
            return
        keys = np.concatenate(self._pending_keys)  # [pending, bands]
        records = np.arange(len(self._keys) - len(keys), len(self._keys), dtype=np.uint64)
        for b, table in enumerate(self._tables):
            table.add(keys[:, b], records)
        self._pending.clear()
        self._pending_sigs.clear()
        self._pending_keys.clear()
        self._pending_count = 0

    def close(self) -> None:
        """Close the signature file (when there is one)."""
        self._signatures.close()

    def _flushed_match(self, sig: np.ndarray, short: bool, keys: np.ndarray) -> tuple[int, float]:
        # One record: scalar searches, cheaper than match_flushed's vectorized machinery on [1] arrays.
        candidates = sorted(
            {i for table, key in zip(self._tables, keys.tolist(), strict=True) for i in table.lookup_one(key)}
        )
        if not candidates:
            return -1, 0.0
        stored = self._signatures.rows(np.array(candidates, dtype=np.int64))
        return self._best(sig, short, candidates, stored)

    def _best(
        self, sig: np.ndarray, short: bool, candidates: list[int], stored: np.ndarray
    ) -> tuple[int, float]:
        """The first (earliest) of the most similar ``candidates`` (their signatures ``stored``) at or
        above the needed similarity, or (-1, 0.0)."""
        similarity = np.count_nonzero(stored == sig, axis=1) / self.num_perm
        needed = np.where(np.array([short or bool(self._short[i]) for i in candidates]), 1.0, self.threshold)
        similarity = np.where(similarity >= needed, similarity, -1.0)
        best = int(np.argmax(similarity))
        return (candidates[best], float(similarity[best])) if similarity[best] >= 0 else (-1, 0.0)

    def find(self, text: str, pivot: str = "") -> Match | None:
        """The best earlier near-duplicate of ``text`` (+ ``pivot``), without indexing it."""
        sig, short = self.hasher.signature(text, pivot)
        if sig is None:
            return None
        keys = self.band_keys(sig[None])[0]
        record, similarity = self._match_pending(sig, short, (keys | self._band_tags).tolist())
        flushed = self._flushed_match(sig, short, keys)
        if flushed[0] >= 0 and (record < 0 or flushed[1] >= similarity):
            record, similarity = flushed
        return Match(self._keys[record], similarity) if record >= 0 else None

    def check_and_add(self, key: str, text: str, pivot: str = "") -> Match | None:
        """The earlier near-duplicate of this record, or None after indexing it under ``key``."""
        sig, short = self.hasher.signature(text, pivot)
        if sig is None:
            return None
        keys = self.band_keys(sig[None])[0]
        match = self.check_and_add_signature(key, sig, short, keys, self._flushed_match(sig, short, keys))
        if self._pending_count >= _FLUSH:
            self.flush()
        return match

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
        # The first min_words words of every n-gram and of every whole short text that can match inside
        # a longer one: a training text none of whose min_words-word windows is here has no overlap but
        # equality, found without a join per window (most training texts).
        self._heads: set[tuple[str, ...]] = set()
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
                self._heads.add(tuple(words[: self.min_words]))
            return
        for i in range(len(words) - self.ngram + 1):
            self._ngrams.setdefault(" ".join(words[i : i + self.ngram]), origin)
            self._heads.add(tuple(words[i : i + self.min_words]))

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
        whole = dedup_text(text)  # words joined by single spaces
        if not whole:
            return None
        words = whole.split()
        if whole in self._short:
            return whole, self._short[whole]
        # Every match below starts with a min_words-word window of the text that heads an evaluation gram.
        if self._heads.isdisjoint(zip(*[words[j:] for j in range(self.min_words)], strict=False)):
            return None
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
