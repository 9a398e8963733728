"""langkit eval suite: benchmark task files, system specs, the results table, sacrebleu's CLI, resuming."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from langkit.cli import main
from langkit.evaluate.benchmarks import (
    TaskError,
    benchmark_files,
    load_benchmark,
    load_benchmark_directions,
)
from langkit.evaluate.metrics import output_flags
from langkit.evaluate.suite import SuiteConfig, load_published, run_suite
from langkit.evaluate.systems import GenerationSettings, SystemSpecError, parse_system, parse_systems

SACREBLEU = Path(sys.executable).with_name("sacrebleu")
LANGKIT = Path(sys.executable).with_name("langkit")

# Sentences written for these tests (illustrative, not validated translations).
ENG = ["Good morning, how are you?", "The water in the river is cold.", "My mother went to the market.",
       "The children walk to school every day.", "Bread is more expensive today.", "Thank you very much."]
WOL = ["Jàmm nga fanaan, naka nga def?", "Ndox mi ci dex gi dafa sedd.", "Sama yaay dem na marse ba.",
       "Xale yi dañuy dox dem lekool bés bu nekk.", "Mburu mi dafa jafe tey.", "Jërëjëf lool."]
SWH = ["Habari za asubuhi, hujambo?", "Maji ya mtoni ni baridi.", "Mama yangu alienda sokoni.",
       "Watoto wanatembea kwenda shuleni kila siku.", "Mkate ni ghali zaidi leo.", "Asante sana."]
# Outputs of an imaginary external system (a "file of outputs").
NLLB_WOL = ["Jàmm nga fanaan?", "Ndox mi dafa sedd.", "Sama yaay dem na marse.", "Xale yi dem nañu lekool.",
            "Mburu mi jafe na.", "Jërëjëf."]


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture()
def flores(tmp_path: Path) -> Path:
    """A folder in FLORES-200's published layout (flores200_dataset/devtest/{code}.devtest)."""
    root = tmp_path / "flores"
    for code, lines in (("eng_Latn", ENG), ("wol_Latn", WOL), ("swh_Latn", SWH), ("lin_Latn", SWH)):
        _write(root / "flores200_dataset" / "devtest" / f"{code}.devtest", lines)
    return root


def _cli(ref: Path, hyp: Path, *args: str) -> dict:
    out = subprocess.run([str(SACREBLEU), str(ref), "-i", str(hyp), "-f", "json", "-w", "4", *args],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


# --------------------------------------------------------------------------------------------------
# Task files
# --------------------------------------------------------------------------------------------------


def test_every_shipped_benchmark_loads_with_afrobench_directions():
    files = benchmark_files()
    assert {"flores200-dev", "flores200-devtest", "ntrex128", "mafand-test", "tico19-test", "aligned"} <= set(files)
    for path in files.values():
        assert load_benchmark(path).directions
    flores = load_benchmark("flores200-devtest")
    assert set(flores.directions) == {f"{a}-{b}" for x in ("wol_Latn", "lin_Latn", "swh_Latn")
                                      for a, b in (("eng_Latn", x), (x, "eng_Latn"))}
    assert set(load_benchmark("mafand-test").directions) == {"fra_Latn-wol_Latn", "wol_Latn-fra_Latn",
                                                            "eng_Latn-swh_Latn", "swh_Latn-eng_Latn"}
    assert set(load_benchmark("tico19-test").directions) == {"eng_Latn-lin_Latn", "lin_Latn-eng_Latn",
                                                            "eng_Latn-swh_Latn", "swh_Latn-eng_Latn"}
    assert "bci_Latn-fra_Latn" in load_benchmark("aligned").directions  # Baoulé: only from the user's files


def test_task_file_with_an_unknown_key_or_code_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfiles: '{code}.txt'\ncodes: {wol_Latn: wol}\ndirectons: [a-b]\n", encoding="utf-8")
    with pytest.raises(TaskError, match=r"bad.yaml: unknown key\(s\) directons"):
        load_benchmark(bad)
    bad.write_text("name: x\nfiles: '{code}.txt'\ncodes: {xyz_Latn: x}\n", encoding="utf-8")
    with pytest.raises(TaskError, match="unknown language code 'xyz_Latn'"):
        load_benchmark(bad)
    with pytest.raises(TaskError, match="unknown benchmark 'flores-9000'"):
        load_benchmark("flores-9000")


def test_missing_or_misaligned_files_are_refused_naming_files_and_counts(flores):
    bench = load_benchmark("flores200-devtest")
    _write(flores / "flores200_dataset" / "devtest" / "wol_Latn.devtest", WOL[:5])
    with pytest.raises(TaskError, match=r"not line-aligned: .*eng_Latn.devtest has 6 lines, .*wol_Latn.devtest has 5"):
        load_benchmark_directions(bench, flores, only=["eng_Latn-wol_Latn"])
    (flores / "flores200_dataset" / "devtest" / "swh_Latn.devtest").unlink()
    with pytest.raises(FileNotFoundError, match=r"benchmark file not found: .*swh_Latn.devtest"):
        load_benchmark_directions(bench, flores, only=["eng_Latn-swh_Latn"])
    with pytest.raises(TaskError, match="bci_Latn is not in this benchmark"):
        load_benchmark_directions(bench, flores, only=["eng_Latn-bci_Latn"])


def test_pair_layouts_mafand_folders_and_tico_tsv(tmp_path):
    # MAFAND-MT: data/text_files/{pair}/test.{code}
    _write(tmp_path / "data/text_files/fr-wol/test.fr", ["Bonjour.", "Merci beaucoup."])
    _write(tmp_path / "data/text_files/fr-wol/test.wol", ["Salaamaalekum.", "Jërëjëf lool."])
    (d,) = load_benchmark_directions(load_benchmark("mafand-test"), tmp_path, only=["wol_Latn-fra_Latn"])
    assert (d.sources, d.references) == (["Salaamaalekum.", "Jërëjëf lool."], ["Bonjour.", "Merci beaucoup."])
    # TICO-19: one TSV per English-X pair, header row; X -> English reads the same file the other way.
    tsv = tmp_path / "tico19-testset/test/test.en-ln.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("sourceLang\ttargetLang\tsourceString\ttargetString\tstringID\n"
                   "en\tln\tWash your hands.\tSukola maboko na yo.\tt1\n"
                   "en\tln\tStay at home.\tFanda na ndako.\tt2\n", encoding="utf-8")
    forward, backward = load_benchmark_directions(load_benchmark("tico19-test"), tmp_path,
                                                  only=["eng_Latn-lin_Latn", "lin_Latn-eng_Latn"])
    assert forward.sources == backward.references == ["Wash your hands.", "Stay at home."]
    assert backward.sources == ["Sukola maboko na yo.", "Fanda na ndako."]


# --------------------------------------------------------------------------------------------------
# Systems and flags
# --------------------------------------------------------------------------------------------------


def test_system_specs_parse_or_are_refused_with_the_shapes():
    spec = parse_system("ft=hf:openai/gpt-oss-20b,adapter=runs/x/train/adapter")
    assert (spec.name, spec.kind, spec.target, spec.options) == ("ft", "hf", "openai/gpt-oss-20b",
                                                                 {"adapter": "runs/x/train/adapter"})
    assert parse_system("served=openai:http://127.0.0.1:8000/v1@gpt-oss-20b").target == \
        "http://127.0.0.1:8000/v1@gpt-oss-20b"
    for bad, message in (("nllb", "does not parse"), ("a=vllm:x", "unknown kind 'vllm'"),
                         ("a b=hf:tiny", "the name 'a b'"), ("s=openai:localhost:8000", "openai:http"),
                         ("h=hf:tiny,lora=x", "unknown option 'lora=x'")):
        with pytest.raises(SystemSpecError, match=message):
            parse_system(bad)
    with pytest.raises(SystemSpecError, match="a given twice"):
        parse_systems(["a=hf:tiny", "a=file:x"])


def test_output_flags_name_empty_copied_and_constant_outputs():
    sources = ["Un.", "Deux.", "Trois.", "Quatre."]
    assert output_flags(sources, [".", ".", ".", "."])["flags"] == ["constant"]
    assert output_flags(sources, ["", "", "a", "b"])["flags"] == ["empty"]
    assert output_flags(sources, ["un.", "Deux.", "x", "y"])["flags"] == ["copied_source"]
    assert output_flags(sources, ["a", "b", "c", "d"])["flags"] == []


# --------------------------------------------------------------------------------------------------
# The suite end to end
# --------------------------------------------------------------------------------------------------


def test_suite_scores_equal_sacrebleu_cli_and_write_one_table(flores, tmp_path):
    nllb = _write(tmp_path / "nllb" / "flores200-devtest" / "eng_Latn-wol_Latn.txt", NLLB_WOL)
    out = tmp_path / "results"
    code = main(["eval", "suite", "--task", "flores200-devtest", "--data", str(flores), "--out", str(out),
                 "--system", "base=hf:tiny", "--system", f"nllb=file:{nllb.parent.parent}",
                 "--directions", "eng_Latn-wol_Latn,wol_Latn-eng_Latn", "--max-new-tokens", "6",
                 "--batch-size", "3", "--bootstrap", "100",
                 "--published", "eval/published/afrobench-flores200-devtest.yaml"])
    assert code == 0
    report = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert {(r["system"], r["direction"]) for r in report["results"]} == {
        ("base", "eng_Latn-wol_Latn"), ("base", "wol_Latn-eng_Latn"), ("nllb", "eng_Latn-wol_Latn")}
    assert report["skipped"] == [{"task": "flores200-devtest", "system": "nllb", "direction": "wol_Latn-eng_Latn",
                                  "reason": "no output file for this direction"}]
    outputs = out / "outputs" / "flores200-devtest"
    for r in report["results"]:
        ref, hyp = outputs / f"{r['direction']}.ref", outputs / f"{r['system']}.{r['direction']}.hyp"
        assert len(hyp.read_text("utf-8").splitlines()) == r["n"] == 6
        for name, args in (("chrf++", ("-m", "chrf", "--chrf-word-order", "2")), ("chrf", ("-m", "chrf")),
                           ("bleu", ("-m", "bleu"))):
            theirs = _cli(ref, hyp, *args)
            assert r["metrics"][name]["score"] == theirs["score"], (r["system"], name)
            assert r["metrics"][name]["signature"] == theirs["signature"]
        assert "nw:0" in r["metrics"]["chrf"]["signature"]  # AfroBench's chrF
        assert r["metrics"]["chrf++"]["ci95"]["n_bootstrap"] == 100
    assert (outputs / "nllb.eng_Latn-wol_Latn.hyp").read_text("utf-8").splitlines() == NLLB_WOL
    (paired,) = report["paired"]
    assert (paired["baseline_system"], paired["compared_system"], paired["direction"]) == \
        ("base", "nllb", "eng_Latn-wol_Latn")
    assert 0 <= paired["p_value"] <= 1 and "bs:100" in paired["signature"]
    # published scores: kept apart, labelled, never among the measured rows
    assert report["published"][0]["metric"] == "chrf" and all(r["system"] in ("base", "nllb") for r in report["results"])
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "| GPT-4o (published) | eng_Latn-wol_Latn | 26.8 |" in md and "Published chrF, not measured here" in md
    with (out / "results.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and {r["system"] for r in rows} == {"base", "nllb"}
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["systems"]["base"]["kind"] == "hf" and report["systems"]["nllb"]["kind"] == "file"


def test_a_file_of_outputs_with_another_line_count_is_refused(flores, tmp_path):
    nllb = _write(tmp_path / "nllb" / "eng_Latn-wol_Latn.txt", NLLB_WOL[:4])
    with pytest.raises(ValueError, match=r"system nllb: .*eng_Latn-wol_Latn.txt has 4 lines but flores200-devtest "
                                         r"eng_Latn-wol_Latn has 6 references"):
        run_suite(SuiteConfig(tasks=["flores200-devtest"], systems=[f"nllb=file:{nllb.parent}"], out=tmp_path / "o",
                              data=str(flores), directions=["eng_Latn-wol_Latn"], bootstrap=0))


def test_bad_arguments_are_refused_before_any_model_loads(flores, tmp_path, capsys):
    base = ["eval", "suite", "--task", "flores200-devtest", "--data", str(flores), "--out", str(tmp_path / "o")]
    assert main([*base, "--system", "a=hf:tiny", "--baseline", "b"]) == 2
    assert "--baseline 'b' is not one of the systems (a)" in capsys.readouterr().err
    assert main([*base, "--system", "a=hf:tiny", "--directions", "eng_Latn-xyz_Latn"]) == 2
    assert "xyz_Latn" in capsys.readouterr().err
    assert main([*base, "--system", "a=run:/nonexistent"]) == 2
    assert "not a langkit run directory" in capsys.readouterr().err
    bad = tmp_path / "published.yaml"
    bad.write_text("source: x\ntask: flores200-devtest\nmetric: chrF\nscores: []\n", encoding="utf-8")
    with pytest.raises(TaskError, match="metric must be one of"):
        load_published(bad)
    assert not (tmp_path / "o" / "cache").exists()


def _suite_cmd(flores: Path, out: Path) -> list[str]:
    return [str(LANGKIT), "-q", "eval", "suite", "--task", "flores200-devtest", "--data", str(flores), "--out", str(out),
            "--system", "base=hf:tiny", "--directions", "eng_Latn-wol_Latn,eng_Latn-swh_Latn",
            "--max-new-tokens", "10", "--batch-size", "1", "--bootstrap", "0"]


def _files(out: Path) -> dict[str, bytes]:
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
             if p.is_file() and "cache" not in p.parts and p.suffix != ".png"}
    report = json.loads(files.pop("results.json"))
    report.pop("created")
    files["results.json"] = json.dumps(report, sort_keys=True).encode()
    return files


@pytest.mark.slow
def test_a_suite_killed_with_sigkill_resumes_and_ends_with_the_same_files(flores, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    whole = tmp_path / "whole"
    subprocess.run(_suite_cmd(flores, whole), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_suite_cmd(flores, killed), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    cached = 0
    while time.monotonic() < deadline and process.poll() is None:
        cached = sum(len(p.read_bytes().splitlines()) for p in killed.rglob("*.jsonl"))
        if cached >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert 2 <= cached < 12 and not (killed / "results.json").exists()

    subprocess.run(_suite_cmd(flores, killed), check=True, env=env, capture_output=True)
    assert _files(killed) == _files(whole)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_an_endpoint_that_dies_mid_run_is_named_and_the_rerun_resumes(flores, tmp_path, tiny_server):
    """A real server (transformers serve on the tiny model) is killed once the suite has cached its first
    output: the error names the system and the direction, the finished outputs stay, and a rerun against the
    server restarted on the same address finishes with the outputs an uninterrupted run gives."""
    import threading

    from langkit.evaluate.suite import SuiteError
    from langkit.serve import start_server

    port = _free_port()
    out = tmp_path / "out"

    def config(url: str, model: str, folder: Path) -> SuiteConfig:
        return SuiteConfig(tasks=["flores200-devtest"], systems=[f"served=openai:{url}@{model}"], out=folder,
                           data=str(flores), directions=["eng_Latn-wol_Latn"], bootstrap=0,
                           generation=GenerationSettings(max_new_tokens=8, concurrency=1, retries=1))

    with start_server(tiny_server.model, port=port, startup_timeout=300) as server:
        def kill_after_first_output() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if any(p.read_bytes().count(b"\n") >= 1 for p in out.rglob("*.jsonl")):
                    server.kill()
                    return
                time.sleep(0.02)

        watcher = threading.Thread(target=kill_after_first_output)
        watcher.start()
        with pytest.raises(SuiteError, match=r"system served failed on flores200-devtest eng_Latn-wol_Latn after "
                                             r"[1-5] of 6 segments .* run the same command again to resume"):
            run_suite(config(server.base_url, server.model, out))
        watcher.join()
    (cache,) = out.rglob("*.jsonl")
    kept = cache.read_text(encoding="utf-8").splitlines()
    assert 1 <= len(kept) < 6

    with start_server(tiny_server.model, port=port, startup_timeout=300) as server:
        run_suite(config(server.base_url, server.model, out))
    assert cache.read_text(encoding="utf-8").splitlines()[: len(kept)] == kept  # resumed, not redone
    whole = tmp_path / "whole"
    run_suite(config(tiny_server.base_url, tiny_server.model, whole))
    name = "outputs/flores200-devtest/served.eng_Latn-wol_Latn.hyp"
    assert (out / name).read_text(encoding="utf-8") == (whole / name).read_text(encoding="utf-8")


def test_hub_copy_is_read_through_datasets_in_the_hubs_layout(tmp_path):
    """FLORES+ on the Hub is one config per language with parquet files per split, declared in its README's
    YAML. The same layout in a local folder goes through the same datasets.load_dataset call (offline)."""
    import dataclasses

    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = tmp_path / "flores_plus"
    configs = []
    for code, lines in (("eng_Latn", ENG), ("wol_Latn", WOL)):
        (repo / code).mkdir(parents=True)
        pq.write_table(pa.table({"id": list(range(len(lines))), "text": lines}), repo / code / "devtest.parquet")
        configs.append(f"- config_name: {code}\n  data_files:\n  - split: devtest\n    path: {code}/devtest.parquet\n")
    (repo / "README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n", encoding="utf-8")
    bench = load_benchmark("flores200-devtest")
    local = dataclasses.replace(bench, hub={**bench.hub, "dataset": str(repo)})
    (d,) = load_benchmark_directions(local, None, only=["wol_Latn-eng_Latn"], limit=4)
    assert (d.sources, d.references, d.total) == (WOL[:4], ENG[:4], 6)
    with pytest.raises(TaskError, match="cannot read .* from the Hub or its local cache.*--data"):
        load_benchmark_directions(local, None, only=["eng_Latn-swh_Latn"])


def test_a_model_that_is_not_gpt_oss_is_prompted_through_its_own_chat_template():
    """hf: systems may be any causal LM: without harmony tokens, the request goes through the tokenizer's chat
    template and generation stops at its end-of-sequence token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from langkit.evaluate.generation import _chat_prompt, prompt_format, translate

    words = ["<unk>", "<pad>", "</s>", "<s>", "Translate", "from", "English", "to", "Wolof.", "user:", "assistant:",
             "Good", "morning.", "Thank", "you."]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="</s>", bos_token="<s>")
    tokenizer.chat_template = ("{% for m in messages %}{% if m.role == 'user' %}user: {{ m.content }} {% endif %}"
                               "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    assert prompt_format(tokenizer) == "chat"
    assert _chat_prompt(tokenizer, "eng_Latn", "wol_Latn", "Good morning.") == \
        "user: Translate from English to Wolof.\n\nGood morning. assistant: "
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         eos_token_id=2, pad_token_id=1, bos_token_id=3))
    outputs = translate(model, tokenizer, "eng_Latn", "wol_Latn", ["Good morning.", "Thank you."], max_new_tokens=3,
                        batch_size=2)
    assert len(outputs) == 2 and all(isinstance(o, str) for o in outputs)  # the new tokens only, decoded
    with pytest.raises(ValueError, match="neither gpt-oss's harmony tokens nor a chat template"):
        tokenizer.chat_template = None
        prompt_format(tokenizer)


def test_cache_key_ignores_how_patiently_an_endpoint_is_asked():
    """After a timeout the natural rerun has a longer --timeout or another --concurrency: it must resume, not
    translate again; a different model or token limit must not reuse the outputs."""
    from langkit.evaluate.cache import system_key

    info = {"kind": "openai", "url": "http://127.0.0.1:8000/v1", "model": "m", "max_tokens": 64,
            "concurrency": 4, "retries": 4, "timeout_s": 120.0}
    settings = {"max_new_tokens": 64, "batch_size": 8, "concurrency": 4, "retries": 4, "timeout": 120.0,
                "dtype": "float32"}
    key = system_key(info, settings)
    patient = system_key({**info, "concurrency": 8, "timeout_s": 600.0},
                         {**settings, "concurrency": 8, "timeout": 600.0, "retries": 9})
    assert patient == key
    assert system_key({**info, "model": "other"}, settings) != key
    assert system_key(info, {**settings, "max_new_tokens": 32}) != key


def test_a_bad_file_of_outputs_is_refused_before_any_model_generates(flores, tmp_path, monkeypatch):
    nllb = _write(tmp_path / "nllb" / "eng_Latn-wol_Latn.txt", NLLB_WOL[:4])
    loaded = []
    monkeypatch.setattr("langkit.evaluate.systems.LocalSystem._load", lambda self: loaded.append(self.name))
    with pytest.raises(ValueError, match="has 4 lines but flores200-devtest eng_Latn-wol_Latn has 6 references"):
        run_suite(SuiteConfig(tasks=["flores200-devtest"], systems=["base=hf:tiny", f"nllb=file:{nllb.parent}"],
                              out=tmp_path / "o", data=str(flores), directions=["eng_Latn-wol_Latn"], bootstrap=0))
    assert loaded == [] and not (tmp_path / "o" / "cache").exists()
