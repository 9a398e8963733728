"""Readers: one source in, a stream of :class:`Record` out, one record per line (or row).

A reader never holds a whole file in memory and never raises on a bad line: malformed input (bad
JSON, a CSV/TSV row with the wrong number of columns, a missing field, bytes that do not decode) comes
out as a record whose ``error`` says why, so the builder can quarantine and count it. Only
configuration problems raise ``ValueError``: a missing file, a header / schema without a configured
column, a missing spreadsheet sheet, aligned files of different lengths.

Formats (``SourceConfig.format``):

- ``text``: one segment per line.
- ``jsonl``: one JSON object per line; ``text_field`` / ``pivot_field`` name the keys.
- ``csv``: comma-separated (or ``delimiter``) with a header row and RFC 4180 quoting, so a cell may
  hold the delimiter, quotes or line breaks; ``line`` is the record's first physical line.
- ``tsv``: tab-separated with a header row and *no* quoting (a quote is just a character, one line is
  one record). A tab-separated file with quoted cells (Excel's "Unicode text") is ``format: csv``
  with ``delimiter: "\\t"``.
- ``aligned``: two line-aligned files, ``path`` (target language) and ``pivot_path`` (pivot), line N of
  one translating line N of the other (``x.wol`` / ``x.fr``). Files of different lengths are refused
  before anything is read (:func:`check_source`): one missing line shifts every pair after it, so
  keeping the common prefix would keep misaligned pairs without a word.
- ``parquet``: read in batches of ``PARQUET_BATCH_ROWS`` rows.
- ``xlsx``: a spreadsheet, streamed with openpyxl's read-only mode; ``sheet`` picks the sheet (default
  the first), the first row is the header, ``line`` is the spreadsheet's row number.
- ``hf``: a Hugging Face dataset, by Hub id or a local folder in the same layout, streamed.

Encodings (``SourceConfig.encoding``, for the line-based formats text / jsonl / csv / tsv / aligned):
``auto`` (the default) reads a UTF-8, UTF-16 or UTF-32 byte-order mark, else recognises BOM-less
UTF-16 by its NUL bytes, else decides between UTF-8 and a legacy 8-bit code page from the whole file,
streamed once before it is read (:func:`sniff_encoding`; nothing but counts and a bounded sample is
held): the file is taken for legacy text when its lines that are not UTF-8 outnumber those holding
UTF-8 beyond ASCII (a tie goes to whichever came first), charset-normalizer picks the code page among
``LEGACY_ENCODINGS`` from those lines, and the text it gives looks like Latin-script prose; otherwise
the bad lines are damage in a UTF-8 file and are quarantined. So a file whose only non-ASCII byte is a
``°`` on line 5,000 is read whole in its code page. In a file read in a legacy code page, a line that is
valid UTF-8 beyond ASCII is quarantined as a mixed-encoding line rather than read as mojibake. Any
other codec name (``cp1252``, ``latin-1``, ``utf-16``...) is used as declared, with no guessing; the
encoding each file was read in is given by :func:`source_encoding` (and counted in ``stats.json``).
Under any encoding, a line that does not decode is quarantined with its line number and the offending
byte; LF, CRLF and a BOM are all accepted. The two files of an ``aligned`` pair are detected each on
its own.

Readers yield the text as found (no normalization); :mod:`langkit.corpus.build` normalizes.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import itertools
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langkit.config import SourceConfig
from langkit.utils import get_logger

log = get_logger("corpus.readers")

BOM = b"\xef\xbb\xbf"
RAW_CHARS = 500
"""How much of a malformed line is kept in the quarantine file, in characters."""
PARQUET_BATCH_ROWS = 1024
"""Rows per batch read from a parquet file (memory stays at one batch)."""
LEGACY_ENCODINGS = ("cp1252", "latin_1", "iso8859_15")
"""Code pages ``encoding: auto`` chooses from when a file is not UTF-8: the Western European ones
(Windows and ISO) that French-keyboard text in West and Central Africa was typed in. Others (DOS
``cp850``, ``mac_roman``...) must be declared: on short texts they cannot be told apart from these,
and unrestricted detection guesses Big5 or Urdu code pages."""
SNIFF_BYTES = 1 << 16
"""Bytes read ahead to recognise a BOM-less UTF-16 file, and the most bytes of non-UTF-8 lines kept to
choose and judge a legacy code page (64 KiB)."""
MAX_RECORD_LINES = 100
"""A CSV record (a quoted cell with line breaks) may span at most this many lines; beyond that it is
taken for an unclosed quote and quarantined, so one stray quote cannot swallow the rest of a file."""
CHUNK_BYTES = 1 << 20
"""Read size when counting lines (1 MiB)."""

_BOMS = (  # longest first: the UTF-32 LE mark begins with the UTF-16 LE one
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (BOM, "utf-8"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
_PUNCTUATION = set("«»‹›‘’‚“”„–—…•·°€£¢¥§©®™²³¹½¼¾¡¿ºª±µ¶´¨¸¯†‡‰ˆ˜\u00a0")
_ESCAPE = "langkit.escape"
_ESCAPED = re.compile("[\udc00-\udcff]")


def _escape_undecodable(err: UnicodeError) -> tuple[str, int]:
    # Like "surrogateescape", but for every byte (UTF-16's bad bytes may be < 0x80): lone surrogates
    # never come out of a strict decoder, so they mark exactly the bytes that did not decode.
    assert isinstance(err, UnicodeDecodeError)
    return "".join(chr(0xDC00 + b) for b in err.object[err.start : err.end]), err.end


codecs.register_error(_ESCAPE, _escape_undecodable)


@dataclass(slots=True)
class Record:
    """One segment of a source, with where it came from inside that source."""

    text: str
    """Target-language text, as read (not yet normalized)."""
    pivot_text: str = ""
    """Aligned pivot text, as read; empty for monolingual sources."""
    line: int = 0
    """1-based line number in the file (header included for CSV/TSV; the first line of a multi-line
    CSV record), the spreadsheet row number for XLSX, or the 1-based row for parquet / hf."""
    error: str = ""
    """Why this line is malformed and must be quarantined; empty for a well-formed record."""
    raw: str = ""
    """The malformed line (cut to RAW_CHARS), for the quarantine file; empty for a good record."""


def source_name(source: SourceConfig) -> str:
    """The configured name, else the file name (or Hub id for ``format: hf``)."""
    if source.name:
        return source.name
    return source.path if source.format == "hf" else Path(source.path).name


def read_source(source: SourceConfig) -> Iterator[Record]:
    """Stream the records of one source, whatever its format. A missing file raises at once."""
    if source.format == "hf":
        return _read_hf(source)
    path = Path(source.path)
    _require_file(source, path)
    if source.format == "aligned":
        _require_file(source, Path(source.pivot_path))
    readers = {
        "text": _read_text,
        "jsonl": _read_jsonl,
        "csv": _read_delimited,
        "tsv": _read_delimited,
        "aligned": _read_aligned,
        "parquet": _read_parquet,
        "xlsx": _read_xlsx,
    }
    if source.format not in readers:
        raise ValueError(f"corpus source {source_name(source)!r}: unknown format {source.format!r}")
    return readers[source.format](source, path)


def check_source(source: SourceConfig) -> None:
    """Raise ``ValueError`` for what would stop this source part-way, before any source is read: a
    missing file, aligned files of different lengths, and (by reading the header and first record)
    a missing column or sheet. Hugging Face datasets are checked when read."""
    if source.format == "hf":
        return
    records = read_source(source)
    if source.format == "aligned":
        path, pivot = Path(source.path), Path(source.pivot_path)
        n, m = count_lines(path, source.encoding), count_lines(pivot, source.encoding)
        if n != m:
            raise ValueError(
                f"corpus source {source_name(source)!r}: aligned files differ in length: {path} has {n} "
                f"lines, {pivot} has {m}. Line N of one must translate line N of the other; a missing or "
                "extra line shifts every pair after it, so fix the files (nothing was read)"
            )
    next(records, None)  # header and first row: a missing column or sheet raises here


def _require_file(source: SourceConfig, path: Path) -> None:
    if not path.is_file():
        raise ValueError(f"corpus source {source_name(source)!r}: file not found: {path}")


# --------------------------------------------------------------------------------------------------
# Decoding: bytes to lines, one line at a time, so one bad byte costs one line, not the file.
# --------------------------------------------------------------------------------------------------


def _label(codec: str) -> str:
    return codecs.lookup(codec).name.upper().replace("ISO8859", "ISO-8859")


def _ascii_compatible(codec: str) -> bool:
    """True when lines can be split on the byte b"\\n" (UTF-8 and 8-bit code pages; not UTF-16/32)."""
    return "\n\ra".encode(codec) == b"\n\ra"


def sniff_encoding(path: Path, declared: str = "auto") -> tuple[str, bool]:
    """(codec, legacy): the codec to read ``path`` with, and whether ``auto`` chose it as a legacy
    code page (then a line that is valid UTF-8 beyond ASCII is a mixed-encoding line). A declared
    codec is taken as is. Cached per file, size and time: the readers and :func:`source_encoding`
    ask for the same file."""
    if declared != "auto":
        return codecs.lookup(declared).name, False
    st = path.stat()
    return _sniff_auto(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sniff_auto(path: str, size: int, mtime_ns: int) -> tuple[str, bool]:
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    for mark, codec in _BOMS:
        if head.startswith(mark):
            return codec, False
    nuls = head.count(b"\x00")
    if head and nuls > len(head) // 4:  # BOM-less UTF-16: every other byte of Latin text is NUL
        odd = head[1::2].count(b"\x00")
        return ("utf-16-le" if odd > nuls - odd else "utf-16-be"), False
    legacy = _scan_for_legacy(Path(path))
    if legacy is not None:
        log.info("%s: not UTF-8; reading it as %s", path, legacy)
        return legacy, True
    return "utf-8", False


def source_encoding(source: SourceConfig) -> str:
    """The encoding(s) a line-based source is read in, as labels (``UTF-8``, ``CP1252``...); for an
    aligned pair ``TARGET / PIVOT`` when they differ. Empty for the other formats."""
    if source.format not in ("text", "jsonl", "csv", "tsv", "aligned"):
        return ""
    paths = [Path(source.path)] + ([Path(source.pivot_path)] if source.format == "aligned" else [])
    labels = [_label(sniff_encoding(p, source.encoding)[0]) for p in paths]
    return " / ".join(dict.fromkeys(labels)) if len(set(labels)) == 1 else " / ".join(labels)


_NON_ASCII_LINE = re.compile(rb"^[^\n]*[\x80-\xff]", re.MULTILINE)
"""Matches once per line that holds a byte beyond ASCII (each match starts at a line start)."""


class _LegacyScan:
    """What :func:`_scan_for_legacy` learns from a file's lines: counts of the lines that are not
    UTF-8 and of those that are UTF-8 beyond ASCII, which came first, and a bounded sample of the
    lines that are not UTF-8."""

    def __init__(self) -> None:
        self.bad = 0
        self.utf8 = 0
        self.bad_first: bool | None = None
        self.sample = bytearray()

    def block(self, block: bytes) -> None:
        """Whole lines (a block ending at a line end, or the file's last bytes)."""
        if block.isascii():
            return
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:  # all UTF-8: count its non-ASCII lines without a Python loop over them
            self.utf8 += len(_NON_ASCII_LINE.findall(block))
            if self.bad_first is None:
                self.bad_first = False
            return
        for line in block.split(b"\n"):
            if line.isascii():
                continue
            if _is_utf8(line):
                self.utf8 += 1
                if self.bad_first is None:
                    self.bad_first = False
                continue
            self.bad += 1
            if self.bad_first is None:
                self.bad_first = True
            if len(self.sample) < SNIFF_BYTES:
                self.sample += line[: SNIFF_BYTES - len(self.sample)] + b"\n"


def _scan_for_legacy(path: Path) -> str | None:
    """The legacy code page ``path`` is written in, judged from the whole file (streamed in
    CHUNK_BYTES reads), or None for UTF-8: when the lines that are not UTF-8 are the minority (or
    as many as the UTF-8 ones and later), or when no candidate code page gives text that looks like
    Latin-script prose, those lines are damage in a UTF-8 file."""
    scan = _LegacyScan()
    carry = b""
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            block = carry + chunk
            cut = block.rfind(b"\n") + 1
            carry = block[cut:]
            if cut:
                scan.block(block[:cut])
    scan.block(carry)
    if not scan.bad or scan.bad < scan.utf8 or (scan.bad == scan.utf8 and not scan.bad_first):
        return None
    return _guess_legacy(bytes(scan.sample))


def decoded_lines(path: Path, encoding: str = "auto") -> Iterator[tuple[int, str, str]]:
    """(1-based line number, line without its line end, error) for each line of ``path``.

    ``error`` is empty for a line that decoded; otherwise it says why, and the line has its
    undecodable bytes replaced by U+FFFD. A BOM at the start is dropped. See the module docstring
    for how ``encoding`` is chosen."""
    codec, legacy = sniff_encoding(path, encoding)
    if _ascii_compatible(codec):
        yield from _byte_lines(path, codec, legacy)
    else:
        yield from _text_lines(path, codec)


def _byte_lines(path: Path, codec: str, legacy: bool) -> Iterator[tuple[int, str, str]]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\r\n")  # LF or CRLF
            try:
                text = raw.decode(codec)
            except UnicodeDecodeError as err:
                yield number, raw.decode(codec, "replace"), _why(codec, raw, err)
                continue
            if number == 1:
                text = text.removeprefix("\ufeff")
            if legacy and not raw.isascii() and _is_utf8(raw):
                error = f"mixed encodings: valid UTF-8 in a file read as {_label(codec)}"
                yield number, raw.decode("utf-8"), error
                continue
            yield number, text, ""


def _why(codec: str, raw: bytes, err: UnicodeDecodeError) -> str:
    return f"undecodable: not valid {_label(codec)} (byte 0x{raw[err.start]:02x} at byte {err.start + 1})"


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _plausible(char: str) -> bool:
    """A character Latin-script prose typed in a legacy code page would hold: a Latin letter or
    common typographic punctuation (not Þ, ð, a lone ×, or the C1 controls random bytes decode to)."""
    if char in _PUNCTUATION:
        return True
    name = unicodedata.name(char, "")
    return name.startswith("LATIN") and "THORN" not in name and "ETH" not in name.split()


_ARITHMETIC = re.compile(r"(?<=\d)[×÷](?=\d)|(?<=\d )[×÷](?= \d)")
"""× and ÷ between numbers (``3×4``, ``2 × 3``): prose, where a lone × is more likely damage."""


def _guess_legacy(sample: bytes) -> str | None:
    """The legacy code page of the lines in ``sample`` (the file's lines that are not UTF-8), or None
    when no candidate gives text that looks like Latin-script prose (then the bytes are damage)."""
    from charset_normalizer import from_bytes

    best = from_bytes(sample, cp_isolation=list(LEGACY_ENCODINGS)).best()
    codec = best.encoding if best is not None else "cp1252"
    if codec not in LEGACY_ENCODINGS:
        return None
    text = _ARITHMETIC.sub("", sample.decode(codec, "replace"))
    extra = [c for c in text if not c.isascii()]
    if not extra or sum(map(_plausible, extra)) < 0.95 * len(extra):
        return None
    return codec


def _text_lines(path: Path, codec: str) -> Iterator[tuple[int, str, str]]:
    """Lines of a UTF-16/32 file: decoded by a text wrapper (a newline is not one byte there)."""
    with open(path, "rb") as raw, io.TextIOWrapper(raw, encoding=codec, errors=_ESCAPE, newline="\n") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if number == 1:
                line = line.removeprefix("\ufeff")
            if bad := _ESCAPED.search(line):
                error = f"undecodable: not valid {_label(codec)} (at character {bad.start() + 1})"
                yield number, _ESCAPED.sub("\ufffd", line), error
            else:
                yield number, line, ""


def count_lines(path: Path, encoding: str = "auto") -> int:
    """Number of lines :func:`decoded_lines` yields for ``path``, read in CHUNK_BYTES chunks."""
    codec, _ = sniff_encoding(path, encoding)
    if not _ascii_compatible(codec):
        return sum(1 for _ in decoded_lines(path, encoding))
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


# --------------------------------------------------------------------------------------------------
# Line-based formats
# --------------------------------------------------------------------------------------------------


def _bad_line(number: int, text: str, error: str) -> Record:
    return Record("", line=number, error=error, raw=text[:RAW_CHARS])


def _read_text(source: SourceConfig, path: Path) -> Iterator[Record]:
    for number, line, error in decoded_lines(path, source.encoding):
        yield _bad_line(number, line, error) if error else Record(line, line=number)


def _field(row: dict[str, Any], name: str) -> tuple[str, str]:
    """(value, error) of one field of a JSON object / parquet row."""
    if name not in row:
        return "", f"missing field {name!r}"
    value = row[name]
    if not isinstance(value, str):
        return "", f"field {name!r} is not a string (got {type(value).__name__})"
    return value, ""


def _from_row(row: dict[str, Any], source: SourceConfig, number: int, raw: str) -> Record:
    text, error = _field(row, source.text_field)
    pivot = ""
    if not error and source.pivot_field:
        pivot, error = _field(row, source.pivot_field)
    if error:
        return Record("", line=number, error=error, raw=raw[:RAW_CHARS])
    return Record(text, pivot, line=number)


def _read_jsonl(source: SourceConfig, path: Path) -> Iterator[Record]:
    for number, line, error in decoded_lines(path, source.encoding):
        if error:
            yield _bad_line(number, line, error)
        elif not line.strip():
            yield Record("", line=number)  # a blank line: dropped as ``empty``, not malformed
        else:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield _bad_line(number, line, f"bad JSON: {err}")
                continue
            if not isinstance(row, dict):
                yield _bad_line(number, line, "not a JSON object")
            else:
                yield _from_row(row, source, number, line)


def _read_aligned(source: SourceConfig, path: Path) -> Iterator[Record]:
    pivot_path = Path(source.pivot_path)
    target = decoded_lines(path, source.encoding)
    pivot = decoded_lines(pivot_path, source.encoding)
    for a, b in itertools.zip_longest(target, pivot):
        if a is None or b is None:  # check_source refuses this before a build reads anything
            longer, shorter = (path, pivot_path) if b is None else (pivot_path, path)
            raise ValueError(f"aligned files differ in length: {longer} goes on after {shorter} ends")
        number, text, error = a
        _, pivot_text, pivot_error = b
        if pivot_error:
            error = "; ".join(e for e in (error, f"pivot file {pivot_path.name}: {pivot_error}") if e)
        if error:
            yield _bad_line(number, f"{text}\t{pivot_text}", error)
        else:
            yield Record(text, pivot_text, line=number)


# --------------------------------------------------------------------------------------------------
# CSV / TSV through the csv module
# --------------------------------------------------------------------------------------------------


class _RunawayRecord(Exception):
    """A CSV record ran past MAX_RECORD_LINES lines: an unclosed quote."""


class _LineFeed:
    """Decoded lines for ``csv.reader``, remembering the lines (and decode errors) of the record being
    parsed, so a record can be reported with its first line number and its raw text."""

    def __init__(self, lines: Iterator[tuple[int, str, str]]) -> None:
        self._lines = lines
        self._pending: tuple[int, str, str] | None = None
        self.first = 0
        """Line number of the current record's first line (0 before it has one)."""
        self.text: list[str] = []
        self.errors: list[str] = []

    def start_record(self) -> None:
        self.first, self.text, self.errors = 0, [], []

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        if self._pending is not None:
            item, self._pending = self._pending, None
        else:
            item = next(self._lines)  # StopIteration: end of the file
        number, text, error = item
        if len(self.text) >= MAX_RECORD_LINES:
            self._pending = item  # this line starts the next record
            raise _RunawayRecord
        self.first = self.first or number
        self.text.append(text)
        if error:
            self.errors.append(error if len(self.text) == 1 else f"line {number}: {error}")
        return text + "\n"


def _read_delimited(source: SourceConfig, path: Path) -> Iterator[Record]:
    """CSV (quoted, RFC 4180) or TSV (no quoting) with a header row naming the columns."""
    tsv = source.format == "tsv"
    delimiter = source.delimiter or ("\t" if tsv else ",")
    what = {"\t": "tab", ",": "comma", ";": "semicolon"}.get(delimiter, repr(delimiter))
    feed = _LineFeed(decoded_lines(path, source.encoding))
    reader = csv.reader(feed, delimiter=delimiter, quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    try:
        header = [name.strip() for name in next(reader)]
    except (StopIteration, csv.Error, _RunawayRecord):
        header = []
    if not header or feed.errors:
        raise ValueError(f"corpus source {source_name(source)!r}: {path} has no readable header row")
    _check_columns(source, header, f"{path}: {source.format.upper()} header")
    text_col = header.index(source.text_field)
    pivot_col = header.index(source.pivot_field) if source.pivot_field else -1
    while True:
        feed.start_record()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield _bad_line(feed.first, "\n".join(feed.text), f"bad {source.format.upper()}: {err}")
            continue
        except _RunawayRecord:
            error = f"unclosed quote: the record runs past {MAX_RECORD_LINES} lines"
            yield _bad_line(feed.first, "\n".join(feed.text), error)
            continue
        number, raw = feed.first, "\n".join(feed.text)
        if feed.errors:
            yield _bad_line(number, raw, "; ".join(feed.errors))
        elif not any(cell.strip() for cell in cells):
            yield Record("", line=number)  # a blank line: dropped as ``empty``, not malformed
        elif len(cells) != len(header):
            yield _bad_line(number, raw, f"expected {len(header)} {what}-separated columns, got {len(cells)}")
        else:
            yield Record(cells[text_col], cells[pivot_col] if pivot_col >= 0 else "", line=number)


# --------------------------------------------------------------------------------------------------
# Tabular formats: rows are dicts; ``line`` is the 1-based row number.
# --------------------------------------------------------------------------------------------------


def _columns(source: SourceConfig) -> list[str]:
    return [source.text_field] + ([source.pivot_field] if source.pivot_field else [])


def _check_columns(source: SourceConfig, available: list[str], where: str) -> None:
    for column in _columns(source):
        if column not in available:
            raise ValueError(f"{where}: column {column!r} not found (columns: {', '.join(available)})")


def _read_parquet(source: SourceConfig, path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    _check_columns(source, parquet.schema_arrow.names, str(path))
    number = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=_columns(source)):
        for row in batch.to_pylist():
            number += 1
            yield _from_row(row, source, number, json.dumps(row, ensure_ascii=False, default=str))


def _cell_text(value: Any) -> str | None:
    """A spreadsheet cell as text: numbers and dates as written (1995, not 1995.0); None if the cell
    holds something else (an error value, say)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return None


def _read_xlsx(source: SourceConfig, path: Path) -> Iterator[Record]:
    """The first (or ``sheet``) sheet of a workbook, streamed row by row in read-only mode. Formula
    cells give the value Excel last computed; columns not named in the config are ignored."""
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # zipfile.BadZipFile, openpyxl's InvalidFileException, KeyError...
        raise ValueError(
            f"corpus source {source_name(source)!r}: {path} is not a readable XLSX file: {err}"
        ) from None
    try:
        if source.sheet and source.sheet not in workbook.sheetnames:
            raise ValueError(
                f"{path}: no sheet named {source.sheet!r} (sheets: {', '.join(workbook.sheetnames)})"
            )
        sheet = workbook[source.sheet] if source.sheet else workbook.worksheets[0]
        rows = sheet.iter_rows(min_row=1, values_only=True)  # read-only mode gives () for an empty row
        header = [_cell_text(v) or "" for v in next(rows, ())]
        header = [name.strip() for name in header]
        _check_columns(source, header, f"{path} sheet {sheet.title!r}")
        wanted = [(name, header.index(name)) for name in _columns(source)]
        for number, row in enumerate(rows, start=2):
            values: list[str] = []
            error = ""
            for name, col in wanted:
                value = _cell_text(row[col]) if col < len(row) else ""
                if value is None:
                    error = f"cell {name!r} is not text (got {type(row[col]).__name__})"
                    break
                values.append(value)
            if error:
                raw = json.dumps([v for v in row], ensure_ascii=False, default=str)
                yield _bad_line(number, raw, error)
            else:
                yield Record(values[0], values[1] if len(values) > 1 else "", line=number)
    finally:
        workbook.close()


def _read_hf(source: SourceConfig) -> Iterator[Record]:
    """A Hugging Face dataset (Hub id or local dataset folder), streamed so nothing is downloaded whole."""
    import datasets

    dataset = datasets.load_dataset(
        source.path, source.hf_config or None, split=source.hf_split, streaming=True
    )
    if dataset.features is not None:
        _check_columns(source, list(dataset.features), f"dataset {source.path} split {source.hf_split}")
    for number, row in enumerate(dataset, start=1):
        yield _from_row(row, source, number, json.dumps(row, ensure_ascii=False, default=str))
