"""Outputs kept as they are produced, so that a killed or failed suite resumes where it stopped.

One append-only JSON-lines file per (system, task, direction), under a folder keyed by a digest of
what the system is and how it is asked (:func:`system_key`): the same name given to another model or
other settings never reuses its outputs. Each line is ``{"i": segment index, "src": digest of the source
text, "out": output}``; a line whose source changed (another version of the test set) is not reused, and
a last line cut by a kill is dropped before anything is appended.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import IO, Any

from langkit.utils import get_logger

log = get_logger("evaluate")


NOT_IN_KEY = ("concurrency", "retries", "timeout", "timeout_s")
"""How an endpoint is asked, not what it answers: a rerun with more patience or more requests in flight
resumes from the same outputs."""


def system_key(info: dict[str, Any], settings: dict[str, Any]) -> str:
    """12 hex digits over the system's description and the generation settings that shape its outputs."""
    shaping = [{k: v for k, v in part.items() if k not in NOT_IN_KEY} for part in (info, settings)]
    blob = json.dumps({"system": shaping[0], "settings": shaping[1]}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class OutputCache:
    """The cached outputs of one system on one direction; use as a context manager to append."""

    def __init__(self, path: Path, sources: list[str]) -> None:
        self.path, self.sources = path, sources
        self.outputs: dict[int, str] = {}
        self._handle: IO[str] | None = None
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        raw = self.path.read_bytes()
        keep = raw.rfind(b"\n") + 1  # a kill can cut the last line: keep whole lines only
        if keep < len(raw):
            log.info("%s: dropping a cut last line (%d bytes)", self.path, len(raw) - keep)
            with self.path.open("r+b") as handle:
                handle.truncate(keep)
        stale = 0
        for number, line in enumerate(raw[:keep].decode("utf-8").splitlines(), start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.path}, line {number}: not a cached output ({err}); remove that line (or the "
                                 "file, to translate the direction again)") from None
            i = row["i"]
            if 0 <= i < len(self.sources) and row["src"] == _digest(self.sources[i]):
                self.outputs[i] = row["out"]
            else:
                stale += 1
        if stale:
            log.warning("%s: %d cached output(s) are for other source text and are not reused", self.path, stale)

    def missing(self) -> list[tuple[int, str]]:
        return [(i, s) for i, s in enumerate(self.sources) if i not in self.outputs]

    def __enter__(self) -> OutputCache:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def add(self, index: int, output: str) -> None:
        """Keep one output. Flushed at once: a SIGKILL loses nothing the OS was given (fsync would only
        add safety against a power cut, at a cost per segment)."""
        assert self._handle is not None, "use the cache as a context manager to add to it"
        self.outputs[index] = output
        row = {"i": index, "src": _digest(self.sources[index]), "out": output}
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()

    def ordered(self) -> list[str]:
        return [self.outputs[i] for i in range(len(self.sources))]
