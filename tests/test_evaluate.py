"""Stage 4: generation, sacrebleu scores, reports, the blinded human-evaluation sheet and its import."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import subprocess
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from langkit import evaluate
from langkit.config import RunConfig
from langkit.evaluate import (
    KEY_COLUMNS,
    SHEET_COLUMNS,
    Direction,
    RatingsError,
    Task,
    Translation,
    decode_answer,
    evaluate_system,
    import_ratings,
    load_task,
    paired_test,
    score,
    stage,
    stop_token_ids,
    translate,
    write_human_eval,
)
from langkit.models import build_random_model
from langkit.rundir import RunDir

SACREBLEU = Path(sys.executable).with_name("sacrebleu")

HYPS = [
    "Maa ngi fi rekk, jërëjëf.",
    "Ñaata la mburu mi jar?",
    "Sama yaay dem na tool ba.",
    "Ndox mi sedd na lool.",
]
REFS = [
    "Nanga def? Maa ngi fi rekk, jërëjëf.",
    "Ñaata la mburu mi jar ci marse bi?",
    "Sama yaay dafa dem ca tool ba ngir bey gerte.",
    "Ndox mi dafa sedd, naan ko ci kaas bi.",
]


@pytest.fixture(scope="module")
def tiny_model():
    return build_random_model("tiny", seed=0)


# --------------------------------------------------------------------------------------------------
# score: the same numbers as sacrebleu's own command line
# --------------------------------------------------------------------------------------------------


def _cli(ref: Path, hyp: Path, *args: str) -> dict:
    out = subprocess.run([str(SACREBLEU), str(ref), "-i", str(hyp), "-f", "json", "-w", "4", *args],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def test_score_equals_sacrebleu_cli(tmp_path):
    ref, hyp = tmp_path / "ref.txt", tmp_path / "hyp.txt"
    ref.write_text("\n".join(REFS) + "\n", encoding="utf-8")
    hyp.write_text("\n".join(HYPS) + "\n", encoding="utf-8")
    ours = score(HYPS, REFS, bootstrap=200)
    for name, args in (("chrf++", ("-m", "chrf", "--chrf-word-order", "2")), ("chrf", ("-m", "chrf")),
                       ("bleu", ("-m", "bleu"))):
        theirs = _cli(ref, hyp, *args)
        assert ours[name]["score"] == theirs["score"], name  # both to 4 decimals
        assert ours[name]["signature"] == theirs["signature"], name
    assert "nw:2" in ours["chrf++"]["signature"] and "nw:0" in ours["chrf"]["signature"]
    assert 0 < ours["chrf++"]["score"] < 100 and ours["chrf++"]["score"] != ours["chrf"]["score"]
    ci = ours["chrf++"]["ci95"]
    assert ci["n_bootstrap"] == 200 and ci["half_width"] > 0 and "bs:200" in ci["signature"]
    theirs = _cli(ref, hyp, "-m", "chrf", "--chrf-word-order", "2", "--confidence", "--confidence-n", "200")
    assert (ci["mean"], ci["half_width"]) == (theirs["confidence_mean"], theirs["confidence_var"])
    assert ci["signature"] == theirs["signature"]
    assert "ci95" not in ours["chrf"]
    assert score(REFS, REFS)["chrf++"]["score"] == 100.0
    with pytest.raises(ValueError, match="3 hypotheses but 4 references"):
        score(HYPS[:3], REFS)


def test_paired_test_equals_sacrebleu_cli_paired_bootstrap(tmp_path):
    baseline = ["Maa ngi.", "Ñaata la?", "Sama yaay.", "Ndox mi."]
    ref, base_file, hyp = tmp_path / "ref.txt", tmp_path / "base.txt", tmp_path / "langkit.txt"
    for path, lines in ((ref, REFS), (base_file, baseline), (hyp, HYPS)):
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ours = paired_test(baseline, HYPS, REFS, n_samples=200)
    # The CLI's JSON output fails on numpy floats in sacrebleu 2.6: read its text table instead.
    text = subprocess.run([str(SACREBLEU), str(ref), "-i", str(base_file), str(hyp), "-m", "chrf",
                           "--chrf-word-order", "2", "--paired-bs", "--paired-bs-n", "200", "-f", "text"],
                          check=True, capture_output=True, text=True).stdout
    assert f"(p = {ours['p_value']:.4f})" in text
    assert ours["signature"] in text and "bs:200" in ours["signature"]
    assert ours["baseline"] == score(baseline, REFS)["chrf++"]["score"] < ours["system"] == score(HYPS, REFS)["chrf++"]["score"]
    with pytest.raises(ValueError, match="3 baseline and 4 system outputs for 4 references"):
        paired_test(baseline[:3], HYPS, REFS)


# --------------------------------------------------------------------------------------------------
# translate: stops at the harmony stop tokens, one string per input, batching changes nothing
# --------------------------------------------------------------------------------------------------


def test_decode_answer_cuts_at_first_stop_token(base_tokenizer):
    tok = base_tokenizer
    ret, end = stop_token_ids(tok)
    assert (ret, end) == (200002, 200007)
    answer = tok.encode("Jërëjëf, waaw.", add_special_tokens=False)
    leak = tok.encode(" LEAK", add_special_tokens=False)
    assert decode_answer(tok, answer + [ret] + leak, [ret, end]) == "Jërëjëf, waaw."
    assert decode_answer(tok, answer + [end] + leak + [ret], [ret, end]) == "Jërëjëf, waaw."
    assert decode_answer(tok, [200005] + answer + leak, [ret, end]) == "Jërëjëf, waaw. LEAK"  # no stop: all, specials skipped
    assert decode_answer(tok, [ret] + leak, [ret, end]) == ""


def _scripted(model, table: dict[int, int], default: int):
    """Make ``model`` choose its next token from its last input token alone, through ``table``."""

    def hook(module, args, kwargs, output):
        last = kwargs["input_ids"][:, -1].tolist()  # [B]
        logits = torch.full_like(output.logits, -1e4)  # [B, L, V]
        for b, token in enumerate(last):
            logits[b, -1, table.get(token, default)] = 0.0
        output.logits = logits
        return output

    return model.register_forward_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("stop", ["<|return|>", "<|end|>"])
def test_translate_stops_at_stop_token(tiny_model, base_tokenizer, stop):
    tok = base_tokenizer
    stop_id = tok.convert_tokens_to_ids(stop)
    answer = tok.encode("Jërëjëf", add_special_tokens=False)
    leak = tok.encode(" LEAK", add_special_tokens=False)[0]
    message = tok.convert_tokens_to_ids("<|message|>")  # every prompt ends with it
    chain = [message, *answer, stop_id]
    assert len(set(chain)) == len(chain), "the script needs distinct ids"
    table = dict(zip(chain[:-1], chain[1:], strict=True)) | {stop_id: leak}  # past the stop token: LEAK forever
    generated = []
    original = tiny_model.generate

    def spy(**kwargs):
        out = original(**kwargs)
        generated.append((kwargs["input_ids"].shape[1], out))
        return out

    handle = _scripted(tiny_model, table, default=leak)
    tiny_model.generate = spy
    try:
        texts = ["Merci.", "Merci beaucoup, à demain à Dakar !", "Oui"]  # different lengths: left padding
        outputs = translate(tiny_model, tok, "fra_Latn", "wol_Latn", texts, max_new_tokens=12, batch_size=3)
    finally:
        del tiny_model.generate
        handle.remove()
    assert outputs == ["Jërëjëf"] * 3
    (width, out), = generated
    new = out[:, width:].tolist()
    assert len(new[0]) == len(answer) + 1 < 12  # stopped at the stop token, not at max_new_tokens
    for row in new:
        assert row == answer + [stop_id]  # no id ever continues past the stop token


def test_translate_random_model_one_per_input_and_batch_invariant(tiny_model, base_tokenizer):
    texts = ["Le chat dort.", "Il fait très beau aujourd'hui à Dakar, n'est-ce pas ?", "Bonjour"]
    batched = translate(tiny_model, base_tokenizer, "fra_Latn", "wol_Latn", texts, max_new_tokens=4, batch_size=3)
    single = translate(tiny_model, base_tokenizer, "fra_Latn", "wol_Latn", texts, max_new_tokens=4, batch_size=1)
    assert len(batched) == 3 and all(isinstance(t, str) and t for t in batched)
    assert batched == single  # left padding + attention mask: a row's answer does not depend on its batch
    assert translate(tiny_model, base_tokenizer, "fra_Latn", "wol_Latn", [], max_new_tokens=4, batch_size=2) == []


# --------------------------------------------------------------------------------------------------
# Human evaluation sheet
# --------------------------------------------------------------------------------------------------


def _translations() -> list[Translation]:
    items = []
    for system in ("langkit", "base"):
        for src, tgt, sources, refs in (("fra_Latn", "wol_Latn", ["Merci.", "Bonjour.", "L'eau est froide."], REFS[:3]),
                                        ("wol_Latn", "fra_Latn", REFS[:3], ["Merci.", "Bonjour.", "L'eau est froide."])):
            for i, (s, r) in enumerate(zip(sources, refs, strict=True)):
                items.append(Translation(system, f"{src}-{tgt}", src, tgt, f"test-{i}", s, f"{system} says {i} {tgt}"[::-1], r))
    return items


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def test_human_eval_sheet_is_blinded_shuffled_and_keyed(tmp_path):
    items = _translations()
    sheet, key = write_human_eval(items, tmp_path / "a", seed=0)
    write_human_eval(items, tmp_path / "b", seed=0)
    write_human_eval(items, tmp_path / "c", seed=1)
    assert sheet.read_bytes() == (tmp_path / "b" / "human_eval.csv").read_bytes()  # deterministic by seed
    assert sheet.read_bytes() != (tmp_path / "c" / "human_eval.csv").read_bytes()

    rows, keys = _read(sheet), _read(key)
    assert list(rows[0]) == list(SHEET_COLUMNS) and list(keys[0]) == list(KEY_COLUMNS)
    text = sheet.read_text(encoding="utf-8")
    for secret in ("langkit", "base", "fra_Latn", "wol_Latn", "test-0"):
        assert secret not in text
    assert all(r["adequacy"] == "" and r["fluency"] == "" for r in rows)
    tag = rows[0]["item_id"].split("-")[1]
    assert [r["item_id"] for r in rows] == [f"item-{tag}-{n:04d}" for n in range(1, len(items) + 1)]
    # Excel reads a CSV without a BOM as cp1252 and shows the judges "Ã«" for "ë"
    assert sheet.read_bytes().startswith(b"\xef\xbb\xbfitem_id,") and "jërëjëf" in sheet.read_text(encoding="utf-8-sig")
    assert [r["output"] for r in rows] != [t.output for t in items]  # shuffled

    by_key = {k["item_id"]: k for k in keys}
    assert sorted(by_key) == sorted(r["item_id"] for r in rows)
    recovered = []
    for r in rows:
        k = by_key[r["item_id"]]
        recovered.append(Translation(k["system"], k["direction"], k["source_language"], k["target_language"],
                                     k["test_id"], r["source"], r["output"], r["reference"]))
    assert sorted(recovered, key=repr) == sorted(items, key=repr)  # every item exactly once, mapped back
    assert "adequacy" in (tmp_path / "a" / "human_eval_README.md").read_text(encoding="utf-8")


def _fill(sheet: Path, key: Path, out: Path, rating, delimiter: str = ",") -> None:
    kinds = {k["item_id"]: k for k in _read(key)}
    rows = _read(sheet)
    for r in rows:
        r["adequacy"], r["fluency"] = rating(kinds[r["item_id"]])
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(SHEET_COLUMNS), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def test_human_eval_xlsx_is_the_same_sheet_and_reads_back_like_the_csv(tmp_path):
    from openpyxl import load_workbook

    items = _translations()
    # Outputs that Excel would run as formulas if they were not stored as text.
    items[0] = dataclasses.replace(items[0], output="=HYPERLINK(\"http://example.org\")")
    items[1] = dataclasses.replace(items[1], output="- Waaw, mu ngi fi.")
    sheet, key = write_human_eval(items, tmp_path, seed=3)
    workbook = load_workbook(sheet.with_suffix(".xlsx"))
    table = [[cell.value for cell in row] for row in workbook.worksheets[0].iter_rows()]
    assert tuple(table[0]) == SHEET_COLUMNS
    assert [[v or "" for v in row] for row in table[1:]] == [[r[c] for c in SHEET_COLUMNS] for r in _read(sheet)]
    cells = [cell for row in workbook.worksheets[0].iter_rows(min_row=2) for cell in row[2:3]]
    assert {"=HYPERLINK(\"http://example.org\")", "- Waaw, mu ngi fi."} <= {c.value for c in cells}
    assert all(c.data_type == "s" for c in cells)  # text, not formulas

    # A judge fills the workbook in Excel (ratings typed as numbers) or the CSV: the same ratings come back.
    kinds = {k["item_id"]: k for k in _read(key)}

    def rating(k):
        return ("5" if k["system"] == "langkit" else "2", "" if k["test_id"] == "test-1" else "4")

    rows = workbook.worksheets[0].iter_rows(min_row=2)
    adequacy_column, fluency_column = SHEET_COLUMNS.index("adequacy"), SHEET_COLUMNS.index("fluency")
    for row in rows:
        adequacy, fluency = rating(kinds[row[0].value])
        row[adequacy_column].value = int(adequacy) if fluency else None
        row[fluency_column].value = float(fluency) if fluency else None
    filled_xlsx, filled_csv = tmp_path / "filled.xlsx", tmp_path / "filled.csv"
    workbook.save(filled_xlsx)
    _fill(sheet, key, filled_csv, lambda k: rating(k) if rating(k)[1] else ("", ""))
    from_xlsx = import_ratings(filled_xlsx, key)
    from_csv = import_ratings(filled_csv, key)
    assert from_xlsx.pop("sheet") == str(filled_xlsx) and from_csv.pop("sheet") == str(filled_csv)
    assert from_xlsx == from_csv
    assert (from_xlsx["rated"], from_xlsx["blank"]) == (8, 4)
    assert from_xlsx["systems"]["langkit"]["fra_Latn-wol_Latn"]["adequacy"] == 5.0

    # Errors name the workbook and the row as Excel numbers it.
    workbook = load_workbook(filled_xlsx)
    adequacy_cell = "ABCDEFG"[adequacy_column] + "4"
    workbook.worksheets[0][adequacy_cell] = 7
    workbook.save(filled_xlsx)
    with pytest.raises(RatingsError, match=r"filled.xlsx, line 4: adequacy must be from 1 to 5, got 7"):
        import_ratings(filled_xlsx, key)
    # A formula that no spreadsheet program computed (the file saved by a script) is not read as blank.
    workbook["ratings"][adequacy_cell] = "=2+2"
    workbook.save(filled_xlsx)
    with pytest.raises(RatingsError, match=r"filled.xlsx, line 4: adequacy must be a whole number .* got '=2\+2'"):
        import_ratings(filled_xlsx, key)
    filled_xlsx.write_bytes(filled_csv.read_bytes())  # a CSV saved under the wrong name
    with pytest.raises(RatingsError, match=r"filled.xlsx: not an XLSX workbook"):
        import_ratings(filled_xlsx, key)
    ods = tmp_path / "filled.ods"
    ods.write_bytes(b"PK\x03\x04")
    with pytest.raises(RatingsError, match=r"filled.ods: a .ods file cannot be read; save it as Excel Workbook"):
        import_ratings(ods, key)


def test_cli_reads_every_judges_sheet_into_pooled_ratings(tmp_path, capsys):
    from langkit.cli import main

    run_dir = RunDir(tmp_path / "run")
    sheet, key = write_human_eval(_translations(), run_dir.eval, seed=3)
    # Judge A rates everything; judge B leaves the base system's test-2 items blank and is harsher.
    judge_a, judge_b = tmp_path / "a.csv", tmp_path / "b.csv"
    _fill(sheet, key, judge_a, lambda k: ("5", "4") if k["system"] == "langkit" else ("2", "2"))
    _fill(sheet, key, judge_b, lambda k: ("", "") if k["system"] == "base" and k["test_id"] == "test-2"
          else ("3", "4") if k["system"] == "langkit" else ("1", "1"))
    config = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
    assert main(["-q", "eval", str(config), "--out", str(run_dir.root), "--ratings", str(judge_a), str(judge_b)]) == 0
    printed = capsys.readouterr().out
    assert "human_ratings.json (2 sheet(s))" in printed and "adequacy" in printed.splitlines()[0]

    ratings = json.loads((run_dir.eval / "human_ratings.json").read_text("utf-8"))
    assert [j["sheet"] for j in ratings["judges"]] == [str(judge_a), str(judge_b)]
    langkit = ratings["pooled"]["langkit"]["fra_Latn-wol_Latn"]
    assert (langkit["sheets"], langkit["rated"], langkit["adequacy"], langkit["fluency"]) == (2, 6, 4.0, 4.0)
    base = ratings["pooled"]["base"]["fra_Latn-wol_Latn"]
    # 3 rows from A at 2, 2 rows from B at 1 (its third is blank): the mean of the 5 rated rows.
    assert (base["rated"], base["blank"], base["adequacy"]) == (5, 1, round((3 * 2 + 2 * 1) / 5, 4))

    # The same sheet twice would count one judge twice.
    assert main(["-q", "eval", str(config), "--out", str(run_dir.root), "--ratings", str(judge_a), str(judge_a)]) == 2
    assert "given more than once" in capsys.readouterr().err

    # A bad sheet stops the import before anything is written, naming the file and line.
    (run_dir.eval / "human_ratings.json").unlink()
    _fill(sheet, key, judge_b, lambda k: ("6", "4"))
    assert main(["-q", "eval", str(config), "--out", str(run_dir.root), "--ratings", str(judge_a), str(judge_b)]) == 2
    assert "b.csv" in capsys.readouterr().err and not (run_dir.eval / "human_ratings.json").exists()


def test_import_ratings_means_blanks_and_errors(tmp_path):
    sheet, key = write_human_eval(_translations(), tmp_path, seed=3)

    def rating(k):
        if k["system"] == "base" and k["test_id"] == "test-2":
            return "", ""  # not rated
        if k["system"] == "langkit":
            return str(3 + int(k["test_id"][-1])), "4"  # adequacy 3, 4, 5 -> mean 4
        return "1", "2"

    filled = tmp_path / "filled.csv"
    _fill(sheet, key, filled, rating, delimiter=";")  # as a French-locale spreadsheet saves it
    result = import_ratings(filled, key)
    assert (result["items"], result["rated"], result["blank"], result["missing"]) == (12, 10, 2, 0)
    for direction in ("fra_Latn-wol_Latn", "wol_Latn-fra_Latn"):
        assert result["systems"]["langkit"][direction] == {"n": 3, "rated": 3, "blank": 0, "adequacy": 4.0, "fluency": 4.0}
        assert result["systems"]["base"][direction] == {"n": 3, "rated": 2, "blank": 1, "adequacy": 1.0, "fluency": 2.0}

    rows = _read(sheet)
    bad_item = rows[4]["item_id"]  # the 5th item: line 6 of the file (line 1 is the header)
    for value, problem in (("7", "must be from 1 to 5, got 7"), ("bon", "whole number from 1 to 5, got 'bon'")):
        _fill(sheet, key, filled, lambda k, v=value: (v if k["item_id"] == bad_item else "3", "3"))
        with pytest.raises(RatingsError) as err:
            import_ratings(filled, key)
        assert str(filled) in str(err.value) and "line 6" in str(err.value) and "adequacy" in str(err.value)
        assert problem in str(err.value)
    _fill(sheet, key, filled, lambda k: ("3", "" if k["item_id"] == bad_item else "3"))
    with pytest.raises(RatingsError, match="line 6: fluency is empty"):
        import_ratings(filled, key)

    # Rows the judge deleted are counted and named.
    _fill(sheet, key, filled, lambda k: ("3", "3"))
    kept = [line for line in filled.read_text("utf-8").splitlines() if rows[2]["item_id"] not in line]
    filled.write_text("\n".join(kept) + "\n", encoding="utf-8")
    result = import_ratings(filled, key)
    assert (result["items"], result["missing"], result["missing_ids"]) == (11, 1, [rows[2]["item_id"]])


def test_import_ratings_names_every_rejected_row(tmp_path):
    sheet, key = write_human_eval(_translations(), tmp_path, seed=3)
    ids = [r["item_id"] for r in _read(sheet)]
    bad = {ids[1]: ("0", "3"), ids[4]: ("3", ""), ids[9]: ("3", "4.5")}  # lines 3, 6 and 11
    filled = tmp_path / "filled.csv"
    _fill(sheet, key, filled, lambda k: bad.get(k["item_id"], ("3", "3")))
    with pytest.raises(RatingsError) as err:
        import_ratings(filled, key)
    message = str(err.value)
    assert "3 row(s) rejected" in message
    for line, problem in ((3, "adequacy must be from 1 to 5, got 0"), (6, "fluency is empty"),
                          (11, "fluency must be a whole number from 1 to 5, got '4.5'")):
        assert f"{filled}, line {line}: {problem}" in message


def test_import_ratings_reads_what_spreadsheets_save(tmp_path):
    """BOM, CRLF, ';', blank lines in the middle, empty ';;;;;' rows at the end, '4,0' from a French locale."""
    sheet, key = write_human_eval(_translations(), tmp_path, seed=3)
    rows = _read(sheet)
    lines = ["item_id;source;output;reference;adequacy;fluency"]
    for n, r in enumerate(rows):
        lines.append(f'{r["item_id"]};"{r["source"]}";"{r["output"]}";"{r["reference"]}";{"4,0" if n % 2 else " 2 "};3')
        if n == 2:
            lines += ["", ""]  # two blank lines after the 3rd item: the 4th is on line 7
    lines += [";;;;;", ";;;;;"]
    filled = tmp_path / "filled.csv"
    filled.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    result = import_ratings(filled, key)
    assert (result["items"], result["rated"], result["blank"], result["missing"]) == (12, 12, 0, 0)
    adequacy = [c["adequacy"] for s in result["systems"].values() for c in s.values()]
    assert sum(c["rated"] for s in result["systems"].values() for c in s.values()) == 12
    assert all(2.0 <= a <= 4.0 for a in adequacy)
    keys = {k["item_id"]: k for k in _read(key)}
    expected: dict[tuple[str, str], list[int]] = {}
    for n, r in enumerate(rows):
        k = keys[r["item_id"]]
        expected.setdefault((k["system"], k["direction"]), []).append(4 if n % 2 else 2)
    for (system, direction), values in expected.items():
        assert result["systems"][system][direction]["adequacy"] == round(sum(values) / len(values), 4)

    lines[4 + 2] = lines[4 + 2].replace(";3", ";9")  # the 4th item, after the blank lines
    filled.write_bytes("\r\n".join(lines).encode("utf-8"))
    with pytest.raises(RatingsError, match="line 7: fluency must be from 1 to 5, got 9"):
        import_ratings(filled, key)


def test_import_ratings_names_a_sheet_that_is_not_utf8(tmp_path):
    sheet, key = write_human_eval(_translations(), tmp_path, seed=3)
    rows = _read(sheet)
    filled = tmp_path / "filled.csv"
    _fill(sheet, key, filled, lambda k: ("3", "3"))
    # Excel's plain "CSV" format saves in the Windows code page: ë becomes the single byte 0xeb
    text = filled.read_text(encoding="utf-8")
    filled.write_bytes(text.encode("cp1252", errors="replace"))
    line, char = next((n, c) for n, r in enumerate(rows, start=2) for c in r["source"] + r["output"] + r["reference"]
                      if ord(c) > 127)  # the first non-ASCII letter (Ñ, ë, ...)
    with pytest.raises(RatingsError, match=rf"filled.csv, line {line}: not UTF-8 \(byte 0x{char.encode('cp1252').hex()}\)"):
        import_ratings(filled, key)


def test_import_ratings_refuses_a_key_from_another_export(tmp_path):
    """Every export numbers its items from 1: a sheet read with another run's key must not be mis-assigned."""
    items = _translations()
    sheet, _ = write_human_eval(items, tmp_path / "a", seed=0)
    _, other_seed = write_human_eval(items, tmp_path / "b", seed=1)  # same items, another order
    rerun = [dataclasses.replace(t, output=t.output + " !") for t in items]
    _, other_outputs = write_human_eval(rerun, tmp_path / "c", seed=0)  # same order, other outputs
    filled = tmp_path / "filled.csv"
    _fill(sheet, tmp_path / "a" / "human_eval_key.csv", filled, lambda k: ("5" if k["system"] == "langkit" else "1", "3"))
    assert import_ratings(filled, tmp_path / "a" / "human_eval_key.csv")["systems"]["langkit"]["fra_Latn-wol_Latn"]["adequacy"] == 5.0
    for key in (other_seed, other_outputs):
        with pytest.raises(RatingsError, match=r"filled.csv, line 2: item_id '.*' is not in .*human_eval_key.csv"):
            import_ratings(filled, key)


def test_import_ratings_checks_the_key(tmp_path):
    sheet, key = write_human_eval(_translations(), tmp_path, seed=3)
    filled = tmp_path / "filled.csv"
    _fill(sheet, key, filled, lambda k: ("3", "3"))
    text = key.read_text(encoding="utf-8")
    key.write_text(text + ",,,,,\n\n", encoding="utf-8")  # the key opened and saved in a spreadsheet
    result = import_ratings(filled, key)
    assert set(result["systems"]) == {"langkit", "base"} and result["missing"] == 0
    first = text.splitlines()[1]
    other = text.splitlines()[2].split(",")
    key.write_text(text + ",".join([first.split(",")[0], *other[1:]]) + "\n", encoding="utf-8")  # line 14
    with pytest.raises(RatingsError, match=r"human_eval_key.csv, line 14: item_id '.*' repeats line 2"):
        import_ratings(filled, key)


# --------------------------------------------------------------------------------------------------
# The task file and the stage's front door
# --------------------------------------------------------------------------------------------------


def test_task_file_matches_defaults_and_rejects_unknown_keys(tmp_path):
    assert load_task(evaluate.DEFAULT_TASK_FILE) == Task()
    bad = tmp_path / "task.yaml"
    bad.write_text("split: test\nmetric: [chrf]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"task.yaml: unknown key\(s\) metric"):
        load_task(bad)
    bad.write_text("metrics: [chrf, ter]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown metric 'ter'"):
        load_task(bad)


def _write_test_split(path: Path) -> None:
    rows = [
        ("t0", "wol_Latn", REFS[0], "fra_Latn", "Comment vas-tu ? Je suis là, merci."),
        ("t1", "wol_Latn", "Sama yaay\ndafa dem.", "fra_Latn", "Ma mère est partie."),  # a line break inside
        ("t2", "wol_Latn", REFS[2], "fra_Latn", "Ma mère est allée au champ."),  # beyond max_items
        ("t3", "wol_Latn", REFS[3], "eng_Latn", "The water is cold."),  # not the default pivot
        ("t4", "swh_Latn", "Habari za asubuhi?", "eng_Latn", "Good morning?"),
        ("t5", "lin_Latn", "Mbote!", "fra_Latn", "Bonjour !"),  # not a language of the run
        ("t6", "swh_Latn", "Asante sana.", "", ""),  # monolingual
    ]
    columns = ("id", "language", "text", "pivot_language", "pivot_text")
    table = pa.Table.from_pylist([dict(zip(columns, r, strict=True)) | {"source": "test", "license": "CC0-1.0",
                                                                          "file": "x", "line": 1} for r in rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_outputs_are_scored_as_the_references_were_normalized(tmp_path, monkeypatch):
    # The references went through the corpus normalizer (ASCII apostrophe, NFC); an output the model wrote
    # with a typographic apostrophe and a decomposed ë is the same text and must score as such.
    from langkit.corpus.normalize import normalize_text

    references = ["Waaw, dafa jëkk ci kër gi.", "Mu ne ma: 'Ñëwal!'"]
    written = ["Waaw, dafa je\u0308kk ci kër gi.", "Mu ne ma: \u2018Ñëwal!\u2019"]
    assert all(normalize_text(w, "wol_Latn")[0] == r for w, r in zip(written, references, strict=True))
    monkeypatch.setattr("langkit.evaluate.stage.translate", lambda *a, **k: list(written))
    direction = Direction("fra_Latn", "wol_Latn", ["t-0", "t-1"], ["Oui, il est arrivé le premier à la maison.", "Il m'a dit : « Viens ! »"], references)
    task = Task(metrics=("chrf++",), bootstrap=0)

    def chrf(normalize, out):
        results, translations = evaluate_system("langkit", None, None, [direction], out, max_new_tokens=4,
                                                batch_size=2, task=task, normalize=normalize)
        assert [t.output for t in translations] == written  # judges see what the model wrote
        outputs = out / "outputs"
        assert (outputs / "langkit.fra_Latn-wol_Latn.gen").read_text("utf-8").splitlines() == written
        scored = (outputs / "langkit.fra_Latn-wol_Latn.hyp").read_text("utf-8").splitlines()  # what sacrebleu's CLI must be given
        assert scored == (references if normalize else written)
        return results[0]["metrics"]["chrf++"]["score"]

    assert chrf(lambda text, language: normalize_text(text, language)[0], tmp_path / "a") == 100.0
    assert chrf(None, tmp_path / "b") < 100.0


def test_outputs_are_normalized_with_the_settings_the_corpus_was_built_with(tmp_path):
    # The references were normalized when the corpus was built: its recorded settings win over the config's.
    run_dir, cfg = RunDir(tmp_path / "run"), RunConfig()
    assert stage._corpus_normalization(run_dir, cfg) is cfg.corpus.normalize  # no corpus stats: the config
    run_dir.corpus.mkdir(parents=True)
    recorded = {**dataclasses.asdict(cfg.corpus.normalize), "unify_apostrophes": False, "a_later_switch": True}
    (run_dir.corpus / "stats.json").write_text(json.dumps({"steps": {"normalize": recorded}}), encoding="utf-8")
    used = stage._corpus_normalization(run_dir, cfg)
    assert used.unify_apostrophes is False and cfg.corpus.normalize.unify_apostrophes is True


def test_run_writes_reports_outputs_and_sheet(tmp_path, monkeypatch, tiny_model, base_tokenizer):
    run_dir = RunDir(tmp_path / "run")
    _write_test_split(run_dir.split("test"))
    # The files the report names by digest (the model itself is stood in below).
    run_dir.adapter.mkdir(parents=True)
    run_dir.adapter_weights.write_bytes(b"adapter tensors")
    run_dir.tokenizer.mkdir(parents=True)
    run_dir.tokenizer_file.write_text("{}", encoding="utf-8")
    cfg = RunConfig(languages=["wol_Latn", "swh_Latn"])
    cfg.eval.max_items, cfg.eval.max_new_tokens, cfg.eval.batch_size = 2, 3, 2
    # The langkit system comes from train.load_adapted_model; stand it in so this test needs no train.py.
    fake_train = types.ModuleType("langkit.train")
    fake_train.load_adapted_model = lambda rd, c: (tiny_model, base_tokenizer)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "langkit.train", fake_train)
    monkeypatch.setattr("langkit.models.load_base_model", lambda *a, **k: tiny_model)
    monkeypatch.setattr("langkit.tokenizer.load_base_tokenizer", lambda *a, **k: base_tokenizer)

    out = evaluate.run(cfg, run_dir)

    assert out == run_dir.eval
    directions = ["fra_Latn-wol_Latn", "wol_Latn-fra_Latn", "eng_Latn-swh_Latn", "swh_Latn-eng_Latn"]
    expected = {"report.json", "report.md", "human_eval.csv", "human_eval.xlsx", "human_eval_key.csv",
                "human_eval_README.md"}
    expected |= {f"outputs/{s}.{d}.{x}" for s in ("langkit", "base") for d in directions for x in ("src", "gen", "hyp", "ref")}
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == expected

    report = json.loads(run_dir.report.read_text(encoding="utf-8"))
    assert (report["model"], report["adapter"], report["test_set"]) == ("tiny", "train/adapter", "corpus/dataset/test.parquet")
    assert report["adapter_sha256"] == hashlib.sha256(b"adapter tensors").hexdigest()
    assert "normalized" in report["scoring"]["outputs"]
    # langkit against base on the same segments, where a direction has two segments or more to resample.
    assert [p["direction"] for p in report["paired"]] == ["fra_Latn-wol_Latn", "wol_Latn-fra_Latn"]
    assert all(0 < p["p_value"] <= 1 and p["n_samples"] == 1000 and "bs:1000" in p["signature"] for p in report["paired"])
    assert "Paired bootstrap" in (out / "report.md").read_text("utf-8")
    assert report["tokenizer_sha256"] == hashlib.sha256(b"{}").hexdigest()
    assert [(r["system"], r["direction"]) for r in report["results"]] == [(s, d) for s in ("langkit", "base") for d in directions]
    for r in report["results"]:
        assert set(r) == {"system", "direction", "source_language", "target_language", "n", "metrics", "flags"}
        assert r["direction"] == f"{r['source_language']}-{r['target_language']}"
        assert r["n"] == (2 if "wol_Latn" in r["direction"] else 1)
        stem = out / "outputs" / f"{r['system']}.{r['direction']}"
        hyps = Path(f"{stem}.hyp").read_text(encoding="utf-8").split("\n")[:-1]
        refs = Path(f"{stem}.ref").read_text(encoding="utf-8").split("\n")[:-1]
        assert len(hyps) == len(refs) == r["n"]
        rescored = score(hyps, refs)
        for name in ("chrf++", "chrf", "bleu"):
            assert r["metrics"][name]["score"] == rescored[name]["score"]
            assert r["metrics"][name]["signature"] == rescored[name]["signature"]
    refs = (out / "outputs" / "langkit.fra_Latn-wol_Latn.ref").read_text(encoding="utf-8")
    assert refs == f"{REFS[0]}\nSama yaay dafa dem.\n"  # first max_items pairs, one line each

    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| langkit | fra_Latn-wol_Latn | 2 |" in md and "nw:2" in md and "meaningless" in md
    assert len(_read(out / "human_eval.csv")) == len(_read(out / "human_eval_key.csv")) == 12


def test_run_names_the_missing_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the corpus stage"):
        evaluate.run(RunConfig(), RunDir(tmp_path))


def test_constant_empty_and_copied_outputs_are_flagged_in_report_and_sheet(tmp_path, monkeypatch):
    # The demo's adapted model once answered "." to everything and the report called it significantly better
    # than base: the report and the judges' sheet must say what the outputs are.
    sources = ["Bonjour à toi.", "Merci beaucoup.", "Il fait chaud.", "Je vais au marché."]
    direction = Direction("fra_Latn", "wol_Latn", [f"t-{i}" for i in range(4)], sources, REFS)
    task = Task(metrics=("chrf++", "chrf", "bleu"), bootstrap=0)
    monkeypatch.setattr("langkit.evaluate.stage.translate", lambda *a, **k: ["."] * 4)
    dotted, dotted_rows = evaluate_system("langkit", None, None, [direction], tmp_path / "a", max_new_tokens=4,
                                          batch_size=2, task=task)
    monkeypatch.setattr("langkit.evaluate.stage.translate", lambda *a, **k: ["", "Merci beaucoup.", "", "x"])
    odd, odd_rows = evaluate_system("base", None, None, [direction], tmp_path / "b", max_new_tokens=4,
                                    batch_size=2, task=task)
    assert dotted[0]["flags"]["flags"] == ["constant"] and dotted[0]["flags"]["most_common"] == {"text": ".", "count": 4}
    assert odd[0]["flags"]["flags"] == ["empty", "copied_source"]

    report = {"model": "tiny", "adapter": "train/adapter", "test_set": "test", "generation": {"max_new_tokens": 4},
              "results": odd + dotted,
              "paired": [{"direction": "fra_Latn-wol_Latn", "baseline": 1.0, "system": 9.0, "p_value": 0.001,
                          "signature": "sig", "compared_system": "langkit"}]}
    md = evaluate.report_markdown(report)
    assert "| fra_Latn-wol_Latn | 1.00 | 9.00 ⚠ | 0.0010 |" in md
    assert "- langkit fra_Latn-wol_Latn: one output repeated ('.' for 4/4)" in md
    assert "- base fra_Latn-wol_Latn: outputs empty (2/4); outputs copy the source (1/4)" in md

    sheet, _ = write_human_eval(dotted_rows + odd_rows, tmp_path)
    notes = sorted(row["note"] for row in _read(sheet))
    assert notes == ["", "empty output", "empty output", "output copies the source"] + \
        ["this exact output is in 4 rows"] * 4
