"""Spreadsheets that people fill in and hand back: the corpus review sample and the human-evaluation sheet.

Each is written twice, as CSV and as XLSX, and read back from either:
- CSV in UTF-8 with a byte-order mark (without it, Excel reads cp1252 and garbles ë, ɛ, ŋ), CRLF line ends;
  read back whatever a spreadsheet program saved: with or without the mark, ``,`` or ``;`` (French-locale
  Excel), any line ends; a file that is not UTF-8 is named with its line;
- XLSX with every text cell stored as text, so that a model output starting with ``=``, ``+``, ``-`` or ``@``
  is shown as written, not run as a formula; header in bold, frozen, wrapped long columns.
Rows come back with the line (CSV) or row (XLSX) that people see in their program, for error messages.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

XLSX_MAX_CHARS = 32_767
"""Longest text an Excel cell holds."""
DEFAULT_WIDTH = 16


class SheetError(ValueError):
    """A sheet that cannot be read; the message names the file, the line and the problem."""


def csv_bytes(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> bytes:
    """``rows`` as CSV for spreadsheet programs: a header, then one line per row (UTF-8 with a BOM, CRLF)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\r\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8-sig")


def _xlsx_text(value: Any) -> Any:
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    if not isinstance(value, str):
        return value
    # Control characters cannot be stored in XLSX: show them as \xNN instead of failing.
    value = ILLEGAL_CHARACTERS_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    return value[:XLSX_MAX_CHARS]


def xlsx_bytes(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], title: str,
               widths: Mapping[str, int] | None = None) -> bytes:
    """``rows`` as an XLSX workbook with one sheet named ``title``; ``widths`` in characters per column."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title)
    sheet.freeze_panes = "A2"
    for i, column in enumerate(columns):
        sheet.column_dimensions[get_column_letter(i + 1)].width = (widths or {}).get(column, DEFAULT_WIDTH)
    bold, wrap = Font(bold=True), Alignment(wrap_text=True, vertical="top")
    header = []
    for column in columns:
        cell = WriteOnlyCell(sheet, value=column)
        cell.font = bold
        header.append(cell)
    sheet.append(header)
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            cell = WriteOnlyCell(sheet, value=_xlsx_text(value))
            if isinstance(value, str):
                cell.data_type = "s"  # text that starts with "=" is text, not a formula
            cell.alignment = wrap
            cells.append(cell)
        sheet.append(cells)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def read_sheet(path: str | Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and the rows of a filled-in sheet (``.xlsx``: its first sheet; anything else: CSV), each
    row with its line or row number and every cell as text ("" when empty)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        return _read_xlsx(path)
    if suffix in (".xls", ".ods", ".numbers"):
        raise SheetError(f"{path}: a {suffix} file cannot be read; save it as Excel Workbook (.xlsx) or as "
                         "CSV UTF-8 (.csv)")
    return _read_csv(path)


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # spreadsheet programs often add a byte-order mark
    except UnicodeDecodeError as err:  # e.g. Excel's plain "CSV" format, saved in the Windows code page
        line = data[: err.start].count(b"\n") + 1
        raise SheetError(f"{path}, line {line}: not UTF-8 (byte 0x{data[err.start]:02x}); "
                         "save it again as CSV UTF-8") from None
    text = re.sub(r"\r\n?", "\n", text)  # universal newlines
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","  # French-locale spreadsheets save with ';'
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = [(reader.line_num, {k: v if isinstance(v, str) else "" for k, v in row.items()}) for row in reader]
    return list(reader.fieldnames or []), rows


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a rating typed as 4 may come back as 4.0
    return str(value)


def _read_xlsx(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    from zipfile import BadZipFile

    from openpyxl import load_workbook

    try:
        # Values as last computed, and the formulas: a formula that no spreadsheet program computed (a file
        # written by a script) has no value, and must read as its formula, not as an empty cell.
        workbooks = [load_workbook(path, read_only=True, data_only=data_only) for data_only in (True, False)]
    except (BadZipFile, KeyError, OSError) as err:
        raise SheetError(f"{path}: not an XLSX workbook ({err}); save it again as Excel Workbook (.xlsx)") from None
    try:
        values, formulas = (workbook.worksheets[0].iter_rows(values_only=True) for workbook in workbooks)
        header = [_cell_text(v).strip() for v in next(values, ())]
        next(formulas, None)
        while header and not header[-1]:
            header.pop()  # empty columns that the program kept to the right
        out = []
        for number, (row, written) in enumerate(zip(values, formulas, strict=False), start=2):
            cells = [_cell_text(v if v is not None else f) for v, f in zip(row, written, strict=False)]
            cells += [""] * max(0, len(header) - len(cells))
            out.append((number, dict(zip(header, cells[: len(header)], strict=True))))
        return header, out
    finally:
        for workbook in workbooks:
            workbook.close()
