"""Readers: CSV/TSV, aligned file pairs, XLSX, and the encodings linguists' files come in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from langkit.config import ConfigError, SourceConfig, load_config
from langkit.corpus import build_corpus, read_source
from langkit.corpus import readers as readers_module
from langkit.corpus.readers import check_source, count_lines, decoded_lines


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def rows(source: SourceConfig) -> list[tuple[str, str, int, str]]:
    return [(r.text, r.pivot_text, r.line, r.error) for r in read_source(source)]


def csv_source(path: Path, **kw: Any) -> SourceConfig:
    base: dict[str, Any] = dict(
        path=str(path), format="csv", language="wol_Latn", name="wol-csv", license="CC-BY-4.0",
        text_field="wol", pivot_field="fra", pivot_language="fra_Latn",
    )  # fmt: skip
    return SourceConfig(**{**base, **kw})


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------------------------------
# CSV and TSV
# --------------------------------------------------------------------------------------------------


def test_csv_quoting_tab_newline_bom_crlf_and_bad_rows(tmp_path: Path) -> None:
    path = write(
        tmp_path / "w.csv",
        b"\xef\xbb\xbfid,wol,fra\r\n"  # BOM + CRLF header
        b'1,"Jamm\trekk, ci","La paix,\r\nseulement"\r\n'  # line 2-3: tab, comma, newline in cells
        b'2,"Mu ne ""waaw""",Il a dit "oui"\r\n'  # line 4: doubled quotes; a bare quote mid-cell
        b"3,only two\r\n"  # line 5: wrong column count
        b"\r\n"  # line 6: blank
        b"4,J\xc3\xabr\xc3\xabj\xc3\xabf,Merci\r\n",  # line 7
    )
    assert rows(csv_source(path)) == [
        ("Jamm\trekk, ci", "La paix,\nseulement", 2, ""),
        ('Mu ne "waaw"', 'Il a dit "oui"', 4, ""),
        ("", "", 5, "expected 3 comma-separated columns, got 2"),
        ("", "", 6, ""),
        ("Jërëjëf", "Merci", 7, ""),
    ]
    bad = list(read_source(csv_source(path)))[2]
    assert bad.raw == "3,only two"
    # Monolingual: only the text column is needed; a semicolon-separated export.
    semi = write(tmp_path / "s.csv", "wol;note\nNanga def;x\n")
    assert rows(SourceConfig(str(semi), "csv", "wol_Latn", text_field="wol", delimiter=";")) == [
        ("Nanga def", "", 2, "")
    ]


def test_csv_unclosed_quote_is_quarantined_and_reading_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers_module, "MAX_RECORD_LINES", 3)
    path = write(tmp_path / "q.csv", 'wol,fra\n"open,x\na\nb\nc\nd,e\n')
    got = rows(csv_source(path))
    assert got[0][2:] == (2, "unclosed quote: the record runs past 3 lines")
    assert got[-1] == ("d", "e", 6, "")  # the line after the runaway record is read again as a record


def test_tsv_keeps_quotes_as_characters(tmp_path: Path) -> None:
    path = write(tmp_path / "w.tsv", 'wol\tfra\n"Jamm\t"paix\n')
    src = SourceConfig(
        str(path), "tsv", "wol_Latn", text_field="wol", pivot_field="fra", pivot_language="fra_Latn"
    )
    assert rows(src) == [('"Jamm', '"paix', 2, "")]


def test_undecodable_line_in_a_csv_record_is_quarantined_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "w.csv", b'wol,fra\n"a\nb\xff",c\nok,fine\n')
    got = rows(csv_source(path, encoding="utf-8"))
    assert got[0][2] == 2 and got[0][3] == "line 3: undecodable: not valid UTF-8 (byte 0xff at byte 2)"
    assert got[1] == ("ok", "fine", 4, "")


# --------------------------------------------------------------------------------------------------
# Encodings
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe" + "Jërëjëf\r\nƐ ti kpa\r\n".encode("utf-16-le"),  # UTF-16 LE with BOM, CRLF
        b"\xfe\xff" + "Jërëjëf\nƐ ti kpa\n".encode("utf-16-be"),  # UTF-16 BE with BOM
        "Jërëjëf\r\nƐ ti kpa".encode("utf-16-le"),  # no BOM, no final newline: found by its NULs
        b"\xef\xbb\xbfJ\xc3\xabr\xc3\xabj\xc3\xabf\r\n\xc6\x90 ti kpa\r\n",  # UTF-8 with BOM
    ],
    ids=["utf16le-bom", "utf16be-bom", "utf16le-nobom", "utf8-bom"],
)
def test_unicode_encodings_are_detected(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path / "a.txt", data)
    assert list(decoded_lines(path)) == [(1, "Jërëjëf", ""), (2, "Ɛ ti kpa", "")]
    assert count_lines(path) == 2


def test_legacy_cp1252_is_detected_or_declared(tmp_path: Path) -> None:
    path = write(tmp_path / "fr.txt", b"Le march\xe9 est loin\r\n\x93J\xe0mm\x94 co\xfbte 5 \x80\n")
    expected = [("Le marché est loin", "", 1, ""), ("“Jàmm” coûte 5 €", "", 2, "")]
    assert rows(SourceConfig(str(path), "text", "wol_Latn")) == expected  # auto
    assert rows(SourceConfig(str(path), "text", "wol_Latn", encoding="cp1252")) == expected
    # Declared latin-1 reads the same bytes differently (no guessing over a declared encoding).
    assert (
        rows(SourceConfig(str(path), "text", "wol_Latn", encoding="latin-1"))[1][0]
        == "\x93Jàmm\x94 coûte 5 \x80"
    )


def test_declared_encoding_quarantines_undecodable_lines(tmp_path: Path) -> None:
    # 0x81 has no character in cp1252; the file is declared cp1252, so line 2 is quarantined.
    path = write(tmp_path / "w.txt", b"caf\xe9\nbad \x81 byte\nfin\n")
    out = tmp_path / "out"
    src = SourceConfig(str(path), "text", "wol_Latn", name="w", license="CC0-1.0", encoding="cp1252")
    stats = build_corpus([src], ["wol_Latn"], out, 0, 0, 0)
    assert (stats["sources"][0]["read"], stats["sources"][0]["kept"], stats["sources"][0]["quarantined"]) == (
        3,
        2,
        1,
    )
    (q,) = read_jsonl(out / "quarantine.jsonl")
    assert (q["file"], q["line"], q["reason"]) == (
        str(path),
        2,
        "undecodable: not valid CP1252 (byte 0x81 at byte 5)",
    )


def test_damaged_utf8_is_quarantined_not_taken_for_a_code_page(tmp_path: Path) -> None:
    # UTF-8 letters first: a later latin-1 line is damage.
    path = write(tmp_path / "a.txt", b"J\xc3\xabr\xc3\xabj\xc3\xabf\nJ\xebr\xebj\xebf\n")
    assert [e for _, _, e in decoded_lines(path)] == [
        "",
        "undecodable: not valid UTF-8 (byte 0xeb at byte 2)",
    ]
    # ASCII then bytes that are no Latin text in any code page (þ, C1 controls): damage too.
    path = write(tmp_path / "b.txt", b"Jamm rekk\n\xfe\x9d\x8f broken\n")
    assert "not valid UTF-8" in list(decoded_lines(path))[1][2]
    # ASCII, then one damaged line before the UTF-8 letters: the file stays UTF-8.
    path = write(tmp_path / "c.txt", b"Jamm\nCaf\xe9 \xab\n" + "Jërëjëf\nÑaata\nŊ\n".encode())
    assert [e[:24] for _, _, e in decoded_lines(path)] == ["", "undecodable: not valid U", "", "", ""]


def test_mixed_encodings_quarantine_the_minority_line(tmp_path: Path) -> None:
    path = write(tmp_path / "m.txt", "À demain\n".encode("cp1252") + "Jërëjëf\n".encode())
    assert list(decoded_lines(path)) == [
        (1, "À demain", ""),
        (2, "Jërëjëf", "mixed encodings: valid UTF-8 in a file read as CP1252"),
    ]


def test_legacy_bytes_late_in_the_file_decide_the_whole_file(tmp_path: Path) -> None:
    # A latin-1/cp1252 file whose only non-ASCII bytes come after hundreds of ASCII lines: a ° on line
    # 601, a × between numbers on line 1201. The whole file is read in its code page, nothing quarantined.
    ascii_lines = [f"Ligne {i} sans accent" for i in range(600)]
    data = "\n".join([*ascii_lines, "Il fait 30° dehors", *ascii_lines, "3 × 4 = 12", "fin"]) + "\n"
    path = write(tmp_path / "late.txt", data.encode("latin-1"))
    got = list(decoded_lines(path))
    assert len(got) == 1203 and not [e for _, _, e in got if e]
    assert (got[600][1], got[1201][1]) == ("Il fait 30° dehors", "3 × 4 = 12")
    src = SourceConfig(str(path), "text", "fra_Latn", name="late", license="CC0-1.0")
    assert readers_module.source_encoding(src) == "CP1252"
    # More UTF-8 lines than bad ones, wherever they are: the bad ones are damage in a UTF-8 file.
    data = "\n".join([*ascii_lines, "Jërëjëf", "Ñaata", *ascii_lines]).encode() + b"\nCaf\xe9\n"
    path = write(tmp_path / "damaged.txt", data)
    errors = [(n, e) for n, _, e in decoded_lines(path) if e]
    assert errors == [(1203, "undecodable: not valid UTF-8 (byte 0xe9 at byte 4)")]


def test_build_counts_the_encoding_of_each_source(tmp_path: Path) -> None:
    late = "\n".join([f"Ligne numero {i} du fichier" for i in range(300)] + ["Il fait 30° dehors"]) + "\n"
    sources = [
        SourceConfig(str(write(tmp_path / "fr.txt", late.encode("cp1252"))), "text", "fra_Latn", name="fr",
                     license="CC0-1.0"),
        SourceConfig(str(write(tmp_path / "fr8.txt", "Déjà vu ici\nEncore une fois\n")), "text", "fra_Latn",
                     name="fr8", license="CC0-1.0"),
        aligned(tmp_path, "Jërëjëf\nBa beneen\n".encode(), b"Merci \xe0 toi\nAu revoir\n", license="CC0-1.0"),
    ]  # fmt: skip
    out = tmp_path / "out"
    stats = build_corpus(sources, ["fra_Latn", "wol_Latn"], out, 0, 0, 0)
    assert [s["encoding"] for s in stats["sources"]] == ["CP1252", "UTF-8", "UTF-8 / CP1252"]
    assert stats["encodings"] == {"CP1252": 1, "UTF-8": 1, "UTF-8 / CP1252": 1}
    assert stats["sources"][0]["quarantined"] == 0
    card = (out / "dataset" / "README.md").read_text(encoding="utf-8")
    assert "| fr | fra_Latn | - | text, CP1252 | CC0-1.0 |" in card
    assert "CP1252 1 source, UTF-8 1 source, UTF-8 / CP1252 1 source." in card


def test_utf16_jsonl_and_bad_utf16_tail(tmp_path: Path) -> None:
    line = json.dumps({"text": "Ɔ ti kpa"}, ensure_ascii=False) + "\r\n"
    path = write(tmp_path / "b.jsonl", (line + line).encode("utf-16"))
    assert rows(SourceConfig(str(path), "jsonl", "bci_Latn")) == [
        ("Ɔ ti kpa", "", 1, ""),
        ("Ɔ ti kpa", "", 2, ""),
    ]
    odd = write(tmp_path / "odd.txt", "ok\nx".encode("utf-16") + b"\x00")  # a dangling byte at the end
    assert list(decoded_lines(odd))[1][2] == "undecodable: not valid UTF-16 (at character 2)"


def test_count_lines_matches_the_reader(tmp_path: Path) -> None:
    for data in (b"", b"a", b"a\n", b"a\nb", b"a\r\n\r\nb\r\n"):
        path = write(tmp_path / "c.txt", data)
        assert count_lines(path) == len(list(decoded_lines(path))), data


# --------------------------------------------------------------------------------------------------
# Aligned file pairs
# --------------------------------------------------------------------------------------------------


def aligned(tmp_path: Path, wol: bytes, fra: bytes, **kw: Any) -> SourceConfig:
    base: dict[str, Any] = dict(
        path=str(write(tmp_path / "x.wol", wol)), pivot_path=str(write(tmp_path / "x.fr", fra)),
        format="aligned", language="wol_Latn", pivot_language="fra_Latn", name="x", license="CC-BY-4.0",
    )  # fmt: skip
    return SourceConfig(**{**base, **kw})


def test_aligned_pair_reads_lines_together_across_encodings(tmp_path: Path) -> None:
    # Wolof in UTF-8 with BOM and CRLF, French in cp1252: each file's encoding is found on its own.
    wol = b"\xef\xbb\xbfSalaam\r\nJ\xc3\xabr\xc3\xabj\xc3\xabf\r\nBa beneen\r\n"
    src = aligned(tmp_path, wol, b"Bonjour\nMerci \xe0 toi\nAu revoir\n")
    assert rows(src) == [
        ("Salaam", "Bonjour", 1, ""), ("J\u00ebr\u00ebj\u00ebf", "Merci \u00e0 toi", 2, ""), ("Ba beneen", "Au revoir", 3, ""),
    ]  # fmt: skip
    check_source(src)  # same length: fine
    # A damaged line in the (UTF-8) French file quarantines the pair, naming the pivot file.
    src = aligned(tmp_path, wol, b"Bonjour\nMerci \xc3\xa0 toi\nAu revoir \xff\n")
    got = rows(src)[2]
    assert got[2:] == (3, "pivot file x.fr: undecodable: not valid UTF-8 (byte 0xff at byte 11)")


def test_aligned_length_mismatch_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    src = aligned(tmp_path, b"a\nb\nc\n", b"A\nB\n")
    with pytest.raises(ValueError) as err:
        check_source(src)
    message = str(err.value)
    assert f"{src.path} has 3 lines" in message and f"{src.pivot_path} has 2" in message
    first = SourceConfig(str(write(tmp_path / "ok.txt", "Jamm\n")), "text", "wol_Latn", name="ok")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="differ in length"):
        build_corpus([first, src], ["wol_Latn"], out, 0, 0, 0)
    assert not out.exists()  # not even the first source was read


def test_aligned_config_checks_and_relative_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pivot_path"):
        SourceConfig("x.wol", "aligned", "wol_Latn", pivot_language="fra_Latn").check("s")
    with pytest.raises(ConfigError, match="pivot_path is only"):
        SourceConfig("x.wol", "text", "wol_Latn", pivot_path="x.fr").check("s")
    with pytest.raises(ConfigError, match="unknown encoding"):
        SourceConfig("x.txt", "text", "wol_Latn", encoding="klingon-8").check("s")
    with pytest.raises(ConfigError, match="sheet is only"):
        SourceConfig("x.csv", "csv", "wol_Latn", sheet="a").check("s")
    with pytest.raises(ConfigError, match="redistribution must be one of"):
        SourceConfig("x.txt", "text", "wol_Latn", redistribution="free").check("s")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"languages": ["wol_Latn"], "corpus": {"sources": [
        {"path": "d/x.wol", "pivot_path": "d/x.fr", "format": "aligned", "language": "wol_Latn",
         "pivot_language": "fra_Latn", "encoding": "utf-8"}]}}))  # fmt: skip
    src = load_config(config).corpus.sources[0]
    assert (src.path, src.pivot_path) == (str(tmp_path / "d/x.wol"), str(tmp_path / "d/x.fr"))


# --------------------------------------------------------------------------------------------------
# XLSX
# --------------------------------------------------------------------------------------------------


def write_xlsx(path: Path) -> Path:
    import openpyxl

    workbook = openpyxl.Workbook()
    notes = workbook.active
    notes.title = "notes"
    notes.append(["not the data"])
    sheet = workbook.create_sheet("corpus")
    sheet.append(["id", "lin", "fra", "comment"])
    sheet.append([1, "Mbote", "Bonjour", "greeting"])
    sheet.append([2, None, None])  # row 3: empty
    sheet.append([3, 1995, "mille neuf cent"])  # row 4: a number in the text column
    sheet.append([4, True, "vrai"])  # row 5: not text
    sheet.append([5, "Matondo"])  # row 6: no pivot cell at all
    workbook.save(path)
    return path


def test_xlsx_reader_streams_a_named_sheet(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "lin.xlsx")
    src = SourceConfig(str(path), "xlsx", "lin_Latn", text_field="lin", pivot_field="fra",
                       pivot_language="fra_Latn", sheet="corpus")  # fmt: skip
    got = rows(src)
    assert got[:3] == [("Mbote", "Bonjour", 2, ""), ("", "", 3, ""), ("1995", "mille neuf cent", 4, "")]
    assert got[3][2:] == (5, "cell 'lin' is not text (got bool)")
    assert got[4] == ("Matondo", "", 6, "")
    with pytest.raises(ValueError, match="no sheet named 'data'.*notes, corpus"):
        check_source(SourceConfig(str(path), "xlsx", "lin_Latn", text_field="lin", sheet="data"))
    with pytest.raises(ValueError, match="column 'lin' not found.*not the data"):
        check_source(SourceConfig(str(path), "xlsx", "lin_Latn", text_field="lin"))  # first sheet
    with pytest.raises(ValueError, match="not a readable XLSX"):
        check_source(SourceConfig(str(write(tmp_path / "bad.xlsx", "no zip")), "xlsx", "lin_Latn"))


# --------------------------------------------------------------------------------------------------
# A build from a mix of the new formats
# --------------------------------------------------------------------------------------------------


def test_build_from_csv_aligned_and_xlsx_keeps_the_invariant(tmp_path: Path) -> None:
    csv_path = write(tmp_path / "w.csv", 'wol,fra\n"Jamm, rekk",La paix\nbroken\n')
    xlsx = write_xlsx(tmp_path / "lin.xlsx")
    sources = [
        csv_source(csv_path),
        aligned(tmp_path, b"Salaam\nNanga def\n", b"Bonjour\nComment vas-tu\n"),
        SourceConfig(
            str(xlsx),
            "xlsx",
            "lin_Latn",
            name="lin-x",
            license="CC0-1.0",
            text_field="lin",
            pivot_field="fra",
            pivot_language="fra_Latn",
            sheet="corpus",
        ),  # fmt: skip
    ]
    out = tmp_path / "out"
    stats = build_corpus(sources, ["wol_Latn", "lin_Latn"], out, 0, 0, 0)
    for s in stats["sources"]:
        assert s["read"] == s["kept"] + sum(s["dropped"].values()) + s["quarantined"]
    by_name = {s["name"]: s for s in stats["sources"]}
    assert by_name["x"]["pivot_language"] == "fra_Latn" and by_name["x"]["kept"] == 2
    assert (by_name["lin-x"]["read"], by_name["lin-x"]["quarantined"]) == (5, 1)
    quarantined = read_jsonl(out / "quarantine.jsonl")
    assert [(q["source"], q["line"]) for q in quarantined] == [("wol-csv", 3), ("lin-x", 5)]


def test_readme_example_per_format_is_a_valid_config() -> None:
    import re

    from langkit.config import config_from_dict

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Corpus sources and formats") :]
    snippet = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert snippet
    cfg = config_from_dict(yaml.safe_load(snippet.group(1)))
    assert {s.format for s in cfg.corpus.sources} == {
        "text",
        "jsonl",
        "csv",
        "tsv",
        "aligned",
        "parquet",
        "xlsx",
        "hf",
    }
