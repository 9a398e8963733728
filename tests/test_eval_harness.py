"""The lm-evaluation-harness bridge: task YAMLs langkit writes, run by the real lm-eval (its Python API and
its ``lm_eval`` command) on the tiny model and a tiny langkit run, offline, on data written here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("lm_eval", reason="lm-eval is not installed: pip install 'langkit[harness]'")

from langkit.config import RunConfig, TrainConfig, save_config  # noqa: E402
from langkit.evaluate import translate  # noqa: E402
from langkit.evaluate.harness import (  # noqa: E402
    HarnessDirection,
    HarnessSystem,
    load_system,
    parse_direction,
    run_harness,
    write_benchmark_tasks,
    write_lm_eval_tasks,
)
from langkit.harmony import SYSTEM_MESSAGE, render_prompt  # noqa: E402
from langkit.models import build_random_model  # noqa: E402
from langkit.rundir import RunDir  # noqa: E402
from langkit.tokenizer import BASE_VOCAB_SIZE  # noqa: E402
from langkit.train.model import prepare_model  # noqa: E402

BIN = Path(sys.executable).parent
# Illustrative sentences written for these tests (not validated translations).
FRA = ["Merci beaucoup.", "Le chat dort sous la table.", "Ma mère est allée au marché."]
WOL = ["Jërëjëf lool.", "Muus mi dafa nelaw ci suufu taabal bi.", "Sama yaay dem na marse ba."]
BCI = ["N sɛ kpa.", "Aluwa'n lafi tabali'n bo.", "Min nin kɔli marsi lɛ."]
SWH = ["Watoto wanakwenda shuleni kila siku.", "Ng'ombe wetu wanakunywa maji mtoni."]
ENG = ["The children go to school every day.", "Our cows drink water at the river."]


def _lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _files(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    return {name: _lines(root / f"{name}.txt", lines)
            for name, lines in (("fra", FRA), ("wol", WOL), ("bci", BCI), ("swh", SWH), ("eng", ENG))}


def _directions(f: dict[str, Path]) -> list[tuple[str, str, str, Path, Path]]:
    return [("lk_fra_wol", "fra_Latn", "wol_Latn", f["fra"], f["wol"]),
            ("lk_bci_fra", "bci_Latn", "fra_Latn", f["bci"], f["fra"]),
            ("lk_eng_swh", "eng_Latn", "swh_Latn", f["eng"], f["swh"])]


def _samples(out: Path, task: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "samples" / f"{task}.jsonl").read_text("utf-8").splitlines()]


def _sacrebleu_cli(hyps: list[str], refs: list[str], tmp: Path, *args: str) -> float:
    """chrF as sacrebleu's own command line prints it on the written outputs."""
    hyp, ref = _lines(tmp / "out.hyp", hyps), _lines(tmp / "out.ref", refs)
    out = subprocess.run([str(BIN / "sacrebleu"), str(ref), "-i", str(hyp), "-m", "chrf", "-f", "json", "-w", "10", *args],
                         check=True, capture_output=True, text=True).stdout
    return float(json.loads(out)["score"])


def _assert_chrf_matches_sacrebleu(results: dict[str, Any], samples: list[dict[str, Any]], task: str, tmp: Path) -> None:
    hyps = [s["filtered_resps"][0] for s in sorted(samples, key=lambda s: s["doc_id"])]
    refs = [s["target"] for s in sorted(samples, key=lambda s: s["doc_id"])]
    assert all("\n" not in h for h in hyps)  # one segment per line, as sacrebleu reads it
    ours = results["results"][task]
    assert ours["chrf,none"] == pytest.approx(_sacrebleu_cli(hyps, refs, tmp), abs=1e-8)
    assert ours["chrf++,none"] == pytest.approx(_sacrebleu_cli(hyps, refs, tmp, "--chrf-word-order", "2"), abs=1e-8)


# --------------------------------------------------------------------------------------------------
# write_lm_eval_tasks
# --------------------------------------------------------------------------------------------------


def test_tasks_are_written_self_contained_and_load_in_lm_eval(tmp_path):
    from lm_eval.tasks import TaskManager

    out = write_lm_eval_tasks(_directions(_files(tmp_path / "data")), tmp_path / "tasks", max_items=2)
    names = {p.name for p in out.iterdir()}
    assert names == {"README.md", "langkit_translation.yaml"} | {f"{t}.{x}" for t in ("lk_fra_wol", "lk_bci_fra", "lk_eng_swh")
                                                                   for x in ("yaml", "jsonl")}
    docs = [json.loads(line) for line in (out / "lk_bci_fra.jsonl").read_text("utf-8").splitlines()]
    assert docs == [{"id": i, "source": BCI[i], "target": FRA[i], "source_language": "bci_Latn",
                     "target_language": "fra_Latn"} for i in range(2)]  # first max_items pairs, Baoulé intact

    manager = TaskManager(include_path=str(out), include_defaults=False)
    loaded = manager.load(["langkit_translation"])
    tasks = loaded["tasks"]
    assert set(tasks) == {"lk_fra_wol", "lk_bci_fra", "lk_eng_swh"}
    task = tasks["lk_bci_fra"]
    doc = task.test_docs()[1]
    # The prompt is langkit's own instruction; the metrics lm-eval's corpus chrF (word order 0) and chrF++.
    assert task.doc_to_text(doc) == "Translate from Baoulé to French.\n\n" + BCI[1]
    assert task.doc_to_target(doc) == FRA[1]
    assert [m["metric"] for m in task.config.metric_list] == ["chrf", "chrf++"]
    assert task.config.generation_kwargs["until"] == ["<|return|>", "<|end|>", "\n"]
    assert task.config.generation_kwargs["do_sample"] is False


def test_benchmark_tasks_for_baoule_from_the_aligned_task_file(tmp_path):
    """eval/aligned.yaml (the user's own aligned files, Baoulé by default) written as lm-eval tasks."""
    from lm_eval.tasks import TaskManager

    (tmp_path / "data").mkdir()
    _lines(tmp_path / "data" / "bci_Latn.txt", BCI)
    _lines(tmp_path / "data" / "fra_Latn.txt", FRA)
    out = write_benchmark_tasks("aligned", tmp_path / "tasks", data=tmp_path / "data", limit=2)
    tasks = TaskManager(include_path=str(out), include_defaults=False).load(["langkit_aligned"])["tasks"]
    assert set(tasks) == {"langkit_aligned_fra_Latn-bci_Latn", "langkit_aligned_bci_Latn-fra_Latn"}
    task = tasks["langkit_aligned_fra_Latn-bci_Latn"]
    docs = list(task.test_docs())
    assert [task.doc_to_text(d) for d in docs] == [f"Translate from French to Baoulé.\n\n{t}" for t in FRA[:2]]
    assert [task.doc_to_target(d) for d in docs] == BCI[:2]


def test_tasks_refuse_bad_input(tmp_path):
    f = _files(tmp_path / "data")
    short = _lines(tmp_path / "short.txt", FRA[:2])
    with pytest.raises(ValueError, match=r"short\.txt has 2 lines but .*wol\.txt has 3"):
        write_lm_eval_tasks([("t", "fra_Latn", "wol_Latn", short, f["wol"])], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        write_lm_eval_tasks([("t", "fra_Latn", "wol_Latn", tmp_path / "missing.txt", f["wol"])], tmp_path / "out")
    with pytest.raises(ValueError, match="unknown language code 'wo'"):
        write_lm_eval_tasks([("t", "fra_Latn", "wo", f["fra"], f["wol"])], tmp_path / "out")
    with pytest.raises(ValueError, match="task or group name 'a b'"):
        write_lm_eval_tasks([HarnessDirection("a b", "fra_Latn", "wol_Latn", f["fra"], f["wol"])], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written before every direction checked


def test_parse_direction():
    assert parse_direction("fra_Latn-bci_Latn=a.fra,b.bci") == HarnessDirection(
        "langkit_fra_Latn-bci_Latn", "fra_Latn", "bci_Latn", Path("a.fra"), Path("b.bci"))
    assert parse_direction("mine:wol_Latn-eng_Latn=C:/x.wol,y.eng").task == "mine"
    for bad in ("fra_Latn-bci_Latn=a.fra", "fra_Latn=a,b", ":fra_Latn-bci_Latn=a,b"):
        with pytest.raises(ValueError, match="expected \\[TASK:\\]SRC-TGT="):
            parse_direction(bad)
    with pytest.raises(ValueError, match="unknown language code 'fr'"):
        parse_direction("fr-bci_Latn=a,b")


# --------------------------------------------------------------------------------------------------
# run_harness on the tiny model: lm-eval's chrF is sacrebleu's
# --------------------------------------------------------------------------------------------------


def _scripted(model: Any, table: dict[int, int], default: int) -> Any:
    """Make ``model`` choose its next token from its last input token alone, through ``table``."""

    def hook(module: Any, args: Any, kwargs: Any, output: Any) -> Any:
        last = kwargs["input_ids"][:, -1].tolist()  # [B]
        logits = torch.full_like(output.logits, -1e4)  # [B, L, V]
        for b, token in enumerate(last):
            logits[b, -1, table.get(token, default)] = 0.0
        output.logits = logits
        return output

    return model.register_forward_hook(hook, with_kwargs=True)


def test_lm_eval_chrf_equals_sacrebleu_on_logged_outputs(tmp_path, base_tokenizer):
    tasks = write_lm_eval_tasks(_directions(_files(tmp_path / "data")), tmp_path / "tasks", max_gen_toks=16)
    model = build_random_model("tiny")
    tok = base_tokenizer
    # A model that answers "Sama yaay dem na." after the prompt, then <|return|>: outputs that share
    # characters with the references, so the scores are not all zero.
    answer = tok.encode("Sama yaay dem na.", add_special_tokens=False)
    message, ret = tok.convert_tokens_to_ids("<|message|>"), tok.convert_tokens_to_ids("<|return|>")
    chain = [message, *answer, ret]
    assert len(set(chain)) == len(chain)
    handle = _scripted(model, dict(zip(chain[:-1], chain[1:], strict=True)), default=ret)
    try:
        system = HarnessSystem("scripted-tiny", model, tok, provenance={"kind": "tiny"})
        out = run_harness(system, ["langkit_translation"], tmp_path / "out", include_path=tasks, batch_size=2,
                          bootstrap_iters=0)
    finally:
        handle.remove()
    results = json.loads((out / "results.json").read_text("utf-8"))
    for task, n in (("lk_fra_wol", 3), ("lk_bci_fra", 3), ("lk_eng_swh", 2)):
        samples = _samples(out, task)
        assert len(samples) == n
        assert {s["filtered_resps"][0] for s in samples} == {"Sama yaay dem na."}
        _assert_chrf_matches_sacrebleu(results, samples, task, tmp_path)
        assert 0 < results["results"][task]["chrf,none"] < 100
    assert results["langkit"]["sacrebleu_signatures"]["chrf"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0")
    assert "nw:2" in results["langkit"]["sacrebleu_signatures"]["chrf++"]
    md = (out / "results.md").read_text("utf-8")
    assert "| lk_bci_fra | 3 | chrf |" in md and "| langkit_translation | 8 | chrf++ |" in md


# --------------------------------------------------------------------------------------------------
# A langkit run: extended tokenizer, resized base, adapter
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(extended_tokenizer, tmp_path_factory) -> RunDir:
    """A run directory with the extended tokenizer and an adapter whose LoRA and new-token rows are
    random (an adapter that changes the model, without the time of training one)."""
    tokenizer, new_tokens, folder = extended_tokenizer
    run = RunDir(tmp_path_factory.mktemp("harness_run"))
    shutil.copytree(folder, run.tokenizer)
    cfg = RunConfig(name="harness", languages=["wol_Latn", "swh_Latn"],
                    train=TrainConfig(model="tiny", lora_r=4, lora_alpha=8))
    cfg.check()
    save_config(cfg, run.config)
    model = prepare_model(cfg.train, tokenizer, new_tokens)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    model.save_pretrained(str(run.adapter))
    return run


def test_run_harness_on_a_langkit_run_uses_its_adapter_tokenizer_and_harmony_prompt(tiny_run, tmp_path):
    from peft import PeftModel

    f = _files(tmp_path / "data")
    # Wolof sources: their prompts hold new tokens, which need the resized embeddings and the adapter's rows.
    tasks = write_lm_eval_tasks([("lk_wol_fra", "wol_Latn", "fra_Latn", f["wol"], f["fra"])], tmp_path / "tasks",
                                max_gen_toks=6, until=("<|return|>", "<|end|>"))
    system = load_system(tiny_run.root)
    tok = system.tokenizer
    rows = system.pretrained.get_input_embeddings().weight.shape[0]
    assert rows == len(tok) > BASE_VOCAB_SIZE  # the base resized for the extended tokenizer
    assert any(i >= BASE_VOCAB_SIZE for i in tok(WOL[1], add_special_tokens=False)["input_ids"])  # new tokens used

    out = run_harness(system, ["lk_wol_fra"], tmp_path / "out", include_path=tasks, limit=2, bootstrap_iters=0)

    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == {
        "results.json", "results.md", "samples/lk_wol_fra.jsonl"}
    results = json.loads((out / "results.json").read_text("utf-8"))
    meta = results["langkit"]
    assert meta["kind"] == "langkit-run" and meta["chat_template"] == "langkit" and meta["base_model"] == "tiny"
    from langkit.utils import sha256_file

    assert meta["adapter_sha256"] == sha256_file(tiny_run.adapter_weights)
    assert results["n-samples"]["lk_wol_fra"]["effective"] == 2

    # lm-eval saw exactly the prompt the run was trained on, and its answers are langkit's own greedy
    # translations (langkit.evaluate.translate) by the adapted model.
    assert isinstance(system.pretrained, PeftModel)
    samples = sorted(_samples(out, "lk_wol_fra"), key=lambda s: s["doc_id"])
    assert [s["arguments"][0][0] for s in samples] == [render_prompt("wol_Latn", "fra_Latn", t) for t in WOL[:2]]
    expected = translate(system.pretrained, tok, "wol_Latn", "fra_Latn", WOL[:2], max_new_tokens=6, batch_size=1)
    # (langkit strips the answer's edges; lm-eval keeps them, which no chrF score sees.)
    assert [s["resps"][0][0].strip() for s in samples] == expected
    assert any(expected)


def test_load_system_names_what_it_cannot_load(tmp_path, tiny_run):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a langkit run directory"):
        load_system(tmp_path / "empty")
    with pytest.raises(ValueError, match="do not pass peft or tokenizer"):
        load_system(tiny_run.root, peft="x")
    with pytest.raises(ValueError, match="chat_template must be one of"):
        load_system("tiny", chat_template="chatml")
    with pytest.raises(ValueError, match="lm-eval knows no task nope"):
        run_harness(HarnessSystem("x", None), ["nope"], tmp_path / "out", include_path=tmp_path / "empty",
                    include_defaults=False)


# --------------------------------------------------------------------------------------------------
# A plain Hugging Face model folder: the real lm_eval command, and run_harness with a local CSV task
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory, base_tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("hf_tiny")
    build_random_model("tiny").save_pretrained(str(folder))
    base_tokenizer.save_pretrained(str(folder))
    return folder


def test_lm_eval_command_runs_the_written_tasks(hf_folder, tmp_path):
    tasks = write_lm_eval_tasks(_directions(_files(tmp_path / "data")), tmp_path / "tasks", max_items=2, max_gen_toks=4)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [str(BIN / "lm_eval"), "--model", "hf", "--model_args", f"pretrained={hf_folder},dtype=float32",
           "--device", "cpu", "--tasks", "langkit_translation", "--include_path", str(tasks), "--apply_chat_template",
           "--system_instruction", SYSTEM_MESSAGE, "--log_samples", "--output_path", str(tmp_path / "lm_eval_out")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (result_file,) = (tmp_path / "lm_eval_out").rglob("results_*.json")
    results = json.loads(result_file.read_text("utf-8"))
    for task, src, tgt, texts in (("lk_fra_wol", "fra_Latn", "wol_Latn", FRA), ("lk_bci_fra", "bci_Latn", "fra_Latn", BCI),
                                  ("lk_eng_swh", "eng_Latn", "swh_Latn", ENG)):
        texts = texts[:2]
        (sample_file,) = result_file.parent.glob(f"samples_{task}_*.jsonl")
        samples = sorted((json.loads(line) for line in sample_file.read_text("utf-8").splitlines()),
                         key=lambda s: s["doc_id"])
        _assert_chrf_matches_sacrebleu(results, samples, task, tmp_path)
        # The folder's harmony chat template and langkit's system message: the prompt langkit trains on.
        assert [s["arguments"]["gen_args_0"]["arg_0"] for s in samples] == [render_prompt(src, tgt, t) for t in texts]
    assert set(results["groups"]) == {"langkit_translation"}


def test_run_harness_on_a_hf_folder_with_a_local_multiple_choice_task(hf_folder, tmp_path):
    """A SIB-style topic task from a local CSV file (loglikelihood requests), as lm-eval's own YAML format
    takes it: the other kind of task run_harness must carry besides generation."""
    data = tmp_path / "topics.csv"
    data.write_text("text,label\n" + "\n".join(f"\"{t}\",{i % 2}" for i, t in enumerate(SWH + WOL[:1])) + "\n",
                    encoding="utf-8")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "topics.yaml").write_text(
        "task: lk_topics\ndataset_path: csv\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: \"Topic of: {{text}}\\nAnswer:\"\ndoc_to_choice: [\"school\", \"animals\"]\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n", encoding="utf-8")
    out = run_harness(hf_folder, ["lk_topics"], tmp_path / "out", include_path=tmp_path / "tasks",
                      device="cpu", dtype="float32", bootstrap_iters=0)
    results = json.loads((out / "results.json").read_text("utf-8"))
    assert results["langkit"]["kind"] == "hf" and results["langkit"]["chat_template"] == "model"
    assert results["n-samples"]["lk_topics"]["effective"] == 3
    assert 0 <= results["results"]["lk_topics"]["acc,none"] <= 1
    samples = _samples(out, "lk_topics")
    assert all(len(s["resps"]) == 2 for s in samples)  # one loglikelihood per choice
    assert "| lk_topics | 3 | acc |" in (out / "results.md").read_text("utf-8")


def test_cli_writes_harness_tasks_for_a_benchmark_and_refuses_both_or_neither(tmp_path, capsys):
    from langkit.cli import main

    data = tmp_path / "aligned"
    data.mkdir()
    (data / "bci_Latn.txt").write_text("Akwaba.\nMin klo nzue.\n", encoding="utf-8")
    (data / "fra_Latn.txt").write_text("Bienvenue.\nJe veux de l'eau.\n", encoding="utf-8")
    out = tmp_path / "tasks"
    assert main(["eval", "harness-tasks", "--task", "aligned", "--data", str(data), "--out", str(out)]) == 0
    assert {p.name for p in out.glob("*.yaml")} >= {"langkit_aligned_fra_Latn-bci_Latn.yaml",
                                                    "langkit_aligned_bci_Latn-fra_Latn.yaml"}
    assert main(["eval", "harness-tasks", "--out", str(tmp_path / "none")]) == 2
    assert "give either --task" in capsys.readouterr().err
