"""Compact stores for the global dedup steps: what the merge must remember about every kept record.

The exact-duplicate set and the near-duplicate index must remember every kept record of a language,
so they are the one part of the corpus build whose memory grows with the corpus. Held as Python
sets and dicts that costs about 2 KB per kept record (2 GB for a million lines); held here it is
about 290 bytes (of which 128 the signature's sketch), and the MinHash signatures themselves go to a
file:

- :class:`SortedRuns`: a set of uint64 values as a few sorted numpy arrays (an LSM tree: each flush
  adds a sorted run, runs of similar size are merged), 8 bytes a value, searched for many values at
  once with ``np.searchsorted``.
- :class:`DigestSet`: the exact-duplicate set, 8-byte digests in :class:`SortedRuns` plus a small
  Python set of the values added since the last flush.
- :class:`BandTable`: one LSH band's ``key -> records`` table, ``key << 32 | record`` in
  :class:`SortedRuns`.
- :class:`SignatureStore`: ``[n, num_perm]`` uint32 rows, in memory blocks or appended to a file and
  read back by row (``os.pread``: a read, not a mapping, so the rows never count in the resident set),
  with an in-memory sketch of each row (its values' low bytes) that rejects most candidates unread.
- :class:`StringTable`: the records' ids as one UTF-8 byte buffer and an offset array.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["BandTable", "DigestSet", "SignatureStore", "SortedRuns", "StringTable"]

_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


class SortedRuns:
    """A multiset of uint64 values in sorted numpy runs. ``add`` takes a batch; :meth:`positions`
    finds, for many values at once, where each run holds them.

    Runs are merged when the newest is at least half the size of the one before (a binary counter),
    so there are about ``log2(n / batch)`` runs and each value is copied about that many times."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs)

    def add(self, values: np.ndarray) -> None:
        if not len(values):
            return
        self.runs.append(np.sort(np.asarray(values, dtype=np.uint64), kind="stable"))
        while len(self.runs) > 1 and 2 * len(self.runs[-1]) >= len(self.runs[-2]):
            last = self.runs.pop()
            before = self.runs.pop()
            merged = np.concatenate((before, last))
            del before, last  # the two halves are freed before the next merge allocates
            merged.sort(kind="stable")  # radix sort for integers: linear
            self.runs.append(merged)

    def contains(self, values: np.ndarray) -> np.ndarray:
        """[n] bool: whether each of ``values`` ([n] uint64) is in the set."""
        found = np.zeros(len(values), dtype=bool)
        for run in self.runs:
            pos = np.searchsorted(run, values)
            inside = pos < len(run)
            found[inside] |= run[pos[inside]] == values[inside]
        return found


class DigestSet:
    """The set of exact-duplicate digests (uint64) of the records kept so far."""

    def __init__(self) -> None:
        self._runs = SortedRuns()
        self._pending: set[int] = set()

    def __len__(self) -> int:
        return len(self._runs) + len(self._pending)

    def contains_flushed(self, digests: np.ndarray) -> np.ndarray:
        """[n] bool: which ``digests`` were added before the last :meth:`flush` (one vectorized
        search per run; check the rest with :meth:`in_pending`)."""
        return self._runs.contains(np.asarray(digests, dtype=np.uint64))

    def in_pending(self, digest: int) -> bool:
        return digest in self._pending

    def add(self, digest: int) -> None:
        self._pending.add(digest)

    def add_many(self, digests: np.ndarray) -> None:
        """Digests known to be new (distinct, none in the set), added as one sorted run at the next
        :meth:`flush`."""
        self._pending.update(np.asarray(digests, dtype=np.uint64).tolist())

    def flush(self) -> None:
        """Move the values added since the last flush into the sorted runs."""
        if self._pending:
            self._runs.add(np.fromiter(self._pending, dtype=np.uint64, count=len(self._pending)))
            self._pending.clear()


class BandTable:
    """One LSH band's flushed entries: which records (ints below 2^32) have a given 32-bit band key,
    as ``key << 32 | record`` in :class:`SortedRuns` (8 bytes an entry)."""

    def __init__(self) -> None:
        self._runs = SortedRuns()

    def add(self, keys: np.ndarray, records: np.ndarray) -> None:
        """Entries for ``records`` ([n] ints) with band ``keys`` ([n], below 2^32)."""
        self._runs.add((np.asarray(keys, dtype=np.uint64) << _SHIFT32) | np.asarray(records, dtype=np.uint64))

    def lookup_one(self, key: int) -> list[int]:
        """The flushed records with band key ``key`` (one record at a time: scalar searches)."""
        found: list[int] = []
        low = key << 32
        for run in self._runs.runs:
            i = int(run.searchsorted(np.uint64(low)))
            while i < len(run) and int(run[i]) >> 32 == key:
                found.append(int(run[i]) & 0xFFFFFFFF)
                i += 1
        return found

    def lookup_flushed(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every flushed (query row, record) pair with the same key, for ``keys`` ([n] uint32 or
        uint64 below 2^32): two [pairs] int64 arrays."""
        # Searched in ascending order: numpy's binary search starts from the previous key's place, and
        # neighbouring keys touch the same pages of the run (at a million entries, 2-3x faster).
        order = np.argsort(keys, kind="stable")
        keys = np.asarray(keys, dtype=np.uint64)[order]
        lows = keys << _SHIFT32
        rows: list[np.ndarray] = []
        records: list[np.ndarray] = []
        for run in self._runs.runs:
            lo = np.searchsorted(run, lows, side="left")
            hit = lo < len(run)
            hit[hit] = (run[lo[hit]] >> _SHIFT32) == keys[hit]
            if not hit.any():
                continue
            # Only the rows with a first match pay for the second search (most rows have none).
            which = np.flatnonzero(hit)
            start = lo[which]
            stop = np.searchsorted(run, lows[which] | _LOW32, side="right")
            counts = stop - start
            rows.append(order[np.repeat(which, counts)])
            # start[i], start[i] + 1, ..., stop[i] - 1 for every hit row, as one flat array.
            offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
            records.append((run[np.repeat(start, counts) + offsets] & _LOW32).astype(np.int64))
        if not rows:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        return np.concatenate(rows).astype(np.int64), np.concatenate(records)


_BLOCK = 1 << 20  # rows per full in-memory block: up to a million rows, reading rows back is one copy
_FIRST_BLOCK = 4096  # rows of a store's first block, doubled (copied) as it fills up to _BLOCK
_GAP = 32  # wanted signature rows at most this far apart are read from the file in one read
_READ_ROWS = 4096  # signature rows read from the file at most at once (2 MB at 128 values)


def _gather(blocks: list[np.ndarray], index: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[k] = row index[k]`` of rows kept in ``blocks`` of ``_BLOCK`` rows: one fancy-indexing
    copy per block touched."""
    if len(blocks) == 1:
        return np.take(blocks[0], index, axis=0, out=out)
    block = index // _BLOCK
    for b in np.unique(block).tolist():
        sel = block == b
        out[sel] = blocks[b][index[sel] - b * _BLOCK]
    return out


class _Rows:
    """``[n, width]`` rows of one dtype appended in order, in memory blocks of ``_BLOCK`` rows (the
    last one allocated small and doubled as it fills, so a small store is small)."""

    def __init__(self, width: int, dtype: type) -> None:
        self.width = width
        self.dtype = dtype
        self.n = 0
        self.blocks: list[np.ndarray] = []

    def extend(self, rows: np.ndarray) -> None:
        done = 0
        while done < len(rows):
            at = self.n % _BLOCK
            if at == 0:
                self.blocks.append(np.empty((min(_FIRST_BLOCK, _BLOCK), self.width), dtype=self.dtype))
            take = min(_BLOCK - at, len(rows) - done)
            last = self.blocks[-1]
            if at + take > len(last):  # the block grows: doubled (or more), at most to _BLOCK rows
                grown: np.ndarray = np.empty((min(_BLOCK, max(2 * len(last), at + take)), self.width), dtype=self.dtype)
                grown[:at] = last[:at]
                self.blocks[-1] = last = grown
            last[at : at + take] = rows[done : done + take]
            done += take
            self.n += take

    def rows(self, index: np.ndarray) -> np.ndarray:
        return _gather(self.blocks, index, np.empty((len(index), self.width), dtype=self.dtype))


class SignatureStore:
    """MinHash signatures, ``[n, width]`` uint32, appended in order and read back by row number.

    With ``path``, rows go to that file (appended; 512 bytes a row at 128 values) and are read back
    with ``os.pread``, and a *sketch* stays in memory: the low byte of every value (128 bytes a row).
    Two equal values have equal low bytes, so the number of equal bytes of two sketches bounds the
    number of equal values from above: a candidate whose sketch is already too different is rejected
    without reading its signature (:meth:`sketch_rows`; on generated text with a small vocabulary,
    nearly every one). Without ``path``, the signatures stay in memory blocks."""

    def __init__(self, width: int, path: Path | None = None) -> None:
        self.width = width
        self.row_bytes = 4 * width
        self._n = 0
        self._memory = _Rows(width, np.uint32) if path is None else None
        self._sketch = _Rows(width, np.uint8) if path is not None else None
        self._file = open(path, "w+b") if path is not None else None  # noqa: SIM115 - closed in close()
        self.path = path

    def __len__(self) -> int:
        return self._n

    @property
    def has_sketch(self) -> bool:
        return self._sketch is not None

    def append(self, sig: np.ndarray) -> None:
        self.extend(np.asarray(sig)[None])

    def extend(self, sigs: np.ndarray) -> None:
        """Append ``[k, width]`` rows."""
        if self._memory is not None:
            self._memory.extend(sigs)
        else:
            self._file.write(np.ascontiguousarray(sigs, dtype="<u4").tobytes())  # type: ignore[union-attr]
            self._sketch.extend(sigs.astype(np.uint8))  # type: ignore[union-attr]  # the low bytes
        self._n += len(sigs)

    def sketch_rows(self, index: np.ndarray) -> np.ndarray:
        """The sketches (low bytes) of the rows ``index`` ([k] int), [k, width] uint8 (file-backed
        stores only)."""
        return self._sketch.rows(index)  # type: ignore[union-attr]

    def rows(self, index: np.ndarray) -> np.ndarray:
        """The rows ``index`` ([k] int), as a [k, width] uint32 array."""
        if self._memory is not None:
            return self._memory.rows(index)
        out = np.empty((len(index), self.width), dtype=np.uint32)
        self._file.flush()  # type: ignore[union-attr]
        fd = self._file.fileno()  # type: ignore[union-attr]
        # Sorted, then one read per run of wanted rows lying within _GAP rows of each other: a row
        # alone costs one 512-byte read, not a window of the file (candidates are scattered over it).
        order = np.argsort(index, kind="stable")
        sorted_index = index[order]
        # Runs cut where rows are far apart, and every _READ_ROWS rows (a read stays a few MB).
        far = np.diff(sorted_index) > _GAP
        far |= np.diff(sorted_index // _READ_ROWS) > 0
        cut = np.flatnonzero(far) + 1
        starts = np.concatenate(([0], cut)).tolist()
        stops = np.concatenate((cut, [len(sorted_index)])).tolist()
        for a, b in zip(starts, stops, strict=True):
            lo, hi = int(sorted_index[a]), int(sorted_index[b - 1]) + 1
            data = os.pread(fd, (hi - lo) * self.row_bytes, lo * self.row_bytes)
            if len(data) != (hi - lo) * self.row_bytes:
                raise OSError(f"{self.path}: short read of signature rows {lo}-{hi} ({len(data)} bytes)")
            window = np.frombuffer(data, dtype="<u4").reshape(hi - lo, self.width)
            out[order[a:b]] = window[sorted_index[a:b] - lo]
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class StringTable:
    """Strings appended in order, read back by number: one UTF-8 buffer and an int64 end offset
    per string (about 8 bytes plus the string's length, instead of a Python str's 50 or more)."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._ends = np.zeros(1024, dtype=np.int64)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, text: str) -> None:
        self._data += text.encode("utf-8")
        if self._n == len(self._ends):
            self._ends = np.concatenate((self._ends, np.zeros(len(self._ends), dtype=np.int64)))
        self._ends[self._n] = len(self._data)
        self._n += 1

    def extend(self, texts: list[str]) -> None:
        if not texts:
            return
        encoded = [t.encode("utf-8") for t in texts]
        ends = len(self._data) + np.cumsum([len(e) for e in encoded], dtype=np.int64)
        self._data += b"".join(encoded)
        while self._n + len(ends) > len(self._ends):
            self._ends = np.concatenate((self._ends, np.zeros(len(self._ends), dtype=np.int64)))
        self._ends[self._n : self._n + len(ends)] = ends
        self._n += len(ends)

    def __getitem__(self, i: int) -> str:
        start = int(self._ends[i - 1]) if i else 0
        return self._data[start : int(self._ends[i])].decode("utf-8")
