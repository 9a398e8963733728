"""Small helpers every stage shares: the logger, progress bars, atomic writes (files and folders), checksums."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

LOGGER_NAME = "langkit"


def get_logger(name: str = "") -> logging.Logger:
    """The langkit logger (or a child of it). Library code logs; it never prints."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


def setup_logging(level: int | str = logging.INFO) -> None:
    """Send langkit's log records to stderr; called once by the command line."""
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(level)


def _progress_hidden() -> bool:
    """Progress bars are hidden when langkit's logger is quieter than INFO (tests, libraries) or
    LANGKIT_NO_PROGRESS is set."""
    return not logging.getLogger(LOGGER_NAME).isEnabledFor(logging.INFO) or bool(os.environ.get("LANGKIT_NO_PROGRESS"))


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """A progress bar on stderr, hidden when langkit's logger is quieter than INFO (tests, libraries).
    Hidden, the items come straight from ``items`` (no wrapper to pay for per item)."""
    if _progress_hidden():
        return iter(items)
    return iter(tqdm(items, desc=desc, total=total, leave=False))


def progress_bar(desc: str, total: int) -> Any:
    """A tqdm bar to ``update()`` by hand (work that reports as it goes), hidden as :func:`progress` is."""
    return tqdm(desc=desc, total=total, disable=_progress_hidden(), leave=False)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file so that readers see either the old content or the new, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600 files; give the file the permissions an ordinary open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove(path: Path) -> None:
    """Remove a file, a link (not what it points to) or a folder tree, if there."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def temp_dir(dest: Path) -> Path:
    """An empty hidden folder next to ``dest`` to write into before :func:`replace_dir` (whatever a crashed
    run left under that name is cleared first)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{dest.name}"
    _remove(tmp)
    tmp.mkdir()
    return tmp


def _fsync(path: Path) -> None:
    if os.name == "nt" and path.is_dir():
        return  # Windows cannot open a folder to flush it (its renames are journaled)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` and the folders themselves to disk: a rename is only as durable as
    what it names, and after a power loss or node crash a renamed folder could otherwise hold empty files."""
    for path in sorted(folder.rglob("*"), reverse=True) + [folder]:
        _fsync(path)


def replace_dir(tmp: Path, dest: Path) -> Path:
    """Put the finished folder ``tmp`` at ``dest`` (replacing a folder, or a link to one) by renames, so that
    readers never see ``dest`` half written. A regular file at ``dest`` is refused (``FileExistsError``),
    never replaced; if the new folder cannot be renamed in, the old one is put back."""
    if dest.is_file() and not dest.is_symlink():
        raise FileExistsError(f"{dest} is a file, not a folder: it is left as it is")
    _sync_tree(tmp)
    old = dest.parent / f".old-{dest.name}"
    _remove(old)  # a crashed swap's leftover
    moved = dest.exists() or dest.is_symlink()
    if moved:
        os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        if moved:
            os.replace(old, dest)
        raise
    _fsync(dest.parent)  # the rename itself
    _remove(old)
    return dest


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> None:
    """Pretty, UTF-8 (not \\u-escaped, so Wolof and Baoulé stay readable), atomic."""
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir() -> Path:
    """Where langkit caches what it rebuilds (the offline o200k_harmony tokenizer):
    ``$LANGKIT_CACHE``, else ``$XDG_CACHE_HOME/langkit``, else ``~/.cache/langkit``."""
    if env := os.environ.get("LANGKIT_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "langkit"
