"""End to end: the demo config through all five stages, with the smallest settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from langkit.cli import main

REPO = Path(__file__).resolve().parents[1]
SMALLEST = [
    "tokenizer.budget=20",
    "train.max_steps=2",
    "train.save_every=1",
    "train.batch_size=2",
    "train.max_length=64",
    "eval.max_items=1",
    "eval.max_new_tokens=4",
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "demo"
    assert main(["-q", "run", str(REPO / "configs/demo.yaml"), "--out", str(out), *SMALLEST]) == 0
    return out


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_run_directory_has_every_stage_output(demo_run):
    files = _files(demo_run)
    expected = {
        "config.yaml", "timings.json",
        "corpus/dataset/train.parquet", "corpus/dataset/dev.parquet", "corpus/dataset/test.parquet",
        "corpus/stats.json", "corpus/dropped.jsonl", "corpus/quarantine.jsonl",
        "tokenizer/stats.json", "tokenizer/tokenizer/tokenizer.json", "tokenizer/tokenizer/tokenizer_config.json",
        "tokenizer/tokenizer/new_tokens.json",
        "train/adapter/adapter_model.safetensors", "train/adapter/adapter_config.json",
        "train/metadata.json", "train/train_log.jsonl", "train/loss.png",
        "eval/report.json", "eval/report.md", "eval/human_eval.csv", "eval/human_eval_key.csv",
        "release/README.md", "release/manifest.json", "release/adapter_model.safetensors",
        "release/adapter_config.json", "release/tokenizer/tokenizer.json", "release/model.sig",
        "signing/throwaway.pem", "signing/throwaway.pub.pem",  # the demo's throwaway signing key pair
    }
    assert expected <= files, sorted(expected - files)
    # Keep-last-N checkpoints: with save_every=1 and 2 steps, both are kept (keep_checkpoints=2).
    assert {f.split("/")[2] for f in files if f.startswith("train/checkpoints/")} == {"step-000001", "step-000002"}
    # Nothing half-written is left behind by the atomic writers (files) or the folder swaps (.tmp-X, .old-X).
    assert not [f for f in files if f.endswith(".tmp") or any(p.startswith((".tmp-", ".old-")) for p in f.split("/"))]
    resolved = yaml.safe_load((demo_run / "config.yaml").read_text())
    assert resolved["train"]["max_steps"] == 2 and resolved["tokenizer"]["budget"] == 20


def test_tokenizer_loads_with_new_tokens(demo_run):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(demo_run / "tokenizer/tokenizer"))
    assert len(tokenizer) == 201_088 + 20


def test_adapter_loads_onto_the_tiny_base(demo_run):
    from peft import PeftModel
    from transformers import AutoTokenizer

    from langkit.models import load_base_model, resize_for_new_tokens
    from langkit.tokenizer import load_new_tokens

    tokenizer = AutoTokenizer.from_pretrained(str(demo_run / "tokenizer/tokenizer"))
    base = load_base_model("tiny")
    resize_for_new_tokens(base, len(tokenizer), load_new_tokens(demo_run / "tokenizer/tokenizer/new_tokens.json"))
    model = PeftModel.from_pretrained(base, str(demo_run / "train/adapter"))
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_report_has_chrf_per_direction(demo_run):
    report = json.loads((demo_run / "eval/report.json").read_text())
    directions = {r["direction"] for r in report["results"] if r["system"] == "langkit"}
    assert directions == {
        "fra_Latn-wol_Latn", "wol_Latn-fra_Latn", "fra_Latn-bci_Latn", "bci_Latn-fra_Latn",
        "eng_Latn-swh_Latn", "swh_Latn-eng_Latn", "fra_Latn-lin_Latn", "lin_Latn-fra_Latn",
    }
    for result in report["results"]:
        chrf = result["metrics"]["chrf++"]
        assert 0.0 <= chrf["score"] <= 100.0
        assert "nw:2" in chrf["signature"] and "version:" in chrf["signature"]
        assert "bleu" in result["metrics"]


def test_release_verifies_and_detects_tampering(demo_run, tmp_path):
    import shutil

    assert main(["-q", "publish", "verify", str(demo_run / "release")]) == 0
    copy = tmp_path / "release"
    shutil.copytree(demo_run / "release", copy)
    with open(copy / "adapter_config.json", "a", encoding="utf-8") as f:
        f.write(" ")
    assert main(["-q", "publish", "verify", str(copy)]) == 1
    # the demo signs its release with its throwaway key
    public_key = str(demo_run / "signing/throwaway.pub.pem")
    assert main(["-q", "publish", "verify", str(demo_run / "release"), "--public-key", public_key]) == 0
    assert main(["-q", "publish", "verify", str(copy), "--public-key", public_key]) == 1


@pytest.mark.skipif(os.environ.get("LANGKIT_SKIP_NOTEBOOK") == "1", reason="LANGKIT_SKIP_NOTEBOOK=1")
def test_walkthrough_notebook_runs(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("LANGKIT_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("LANGKIT_NOTEBOOK_OUT", str(tmp_path / "run"))
    notebook = nbformat.read(REPO / "notebooks/walkthrough.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "OK: " in outputs and "files match the manifest" in outputs
    assert (tmp_path / "run/release/manifest.json").is_file()


def test_eval_suite_scores_a_run_a_hub_model_an_endpoint_and_a_file_in_one_command(demo_run, tiny_server, tmp_path):
    """The README's researcher path: four kinds of system on FLORES-200 devtest files, one table."""
    import json

    flores = tmp_path / "flores" / "flores200_dataset" / "devtest"
    flores.mkdir(parents=True)
    (flores / "eng_Latn.devtest").write_text("The water is cold.\nThank you very much.\nGood morning.\n", "utf-8")
    (flores / "wol_Latn.devtest").write_text("Ndox mi dafa sedd.\nJërëjëf lool.\nJàmm nga fanaan.\n", "utf-8")
    nllb = tmp_path / "nllb"
    nllb.mkdir()
    (nllb / "eng_Latn-wol_Latn.txt").write_text("Ndox mi sedd na.\nJërëjëf.\nJàmm nga fanaan.\n", "utf-8")
    out = tmp_path / "results"
    assert main(["-q", "eval", "suite", "--task", "flores200-devtest", "--data", str(tmp_path / "flores"),
                 "--system", "base=hf:tiny", "--system", f"adapted=run:{demo_run}",
                 "--system", f"served=openai:{tiny_server.base_url}@{tiny_server.model}",
                 "--system", f"nllb=file:{nllb}", "--directions", "eng_Latn-wol_Latn", "--max-new-tokens", "4",
                 "--bootstrap", "50", "--out", str(out)]) == 0
    report = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [r["system"] for r in report["results"]] == ["base", "adapted", "served", "nllb"]
    assert [p["compared_system"] for p in report["paired"]] == ["adapted", "served", "nllb"]
    assert report["systems"]["adapted"]["adapter_sha256"] == json.loads(
        (demo_run / "eval" / "report.json").read_text(encoding="utf-8"))["adapter_sha256"]
    assert report["systems"]["served"]["kind"] == "openai"
    for name in ("results.md", "results.csv", "results.png"):
        assert (out / name).stat().st_size > 0


def test_agency_path_unbundle_serve_first_request_and_score(demo_run, tmp_path):
    """The README's agency path on the demo's signed release: bundle it, unbundle it with the publisher's public
    key, `langkit serve` the folder (verified again, merged beside it, never inside), a first chat request
    through the official openai client, the served model scored by `langkit eval suite` with the very
    translations the run itself gives, and Ctrl-C stopping the server."""
    import queue
    import signal
    import socket
    import subprocess
    import sys
    import threading
    import time

    from openai import OpenAI

    from langkit.harmony import translation_request
    from langkit.serve import SYSTEM_IDENTITY, free_port

    public_key = str(demo_run / "signing/throwaway.pub.pem")
    bundle, release = tmp_path / "wolof-v1.tar", tmp_path / "agency" / "wolof-v1"
    assert main(["-q", "publish", "bundle", str(demo_run / "release"), "--out", str(bundle)]) == 0
    assert main(["-q", "publish", "unbundle", str(bundle), "--out", str(release), "--public-key", public_key]) == 0

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "langkit", "serve", str(release), "--port", str(port),
                               "--public-key", public_key], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in server.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 600
        while not any(line.startswith("  model:") for line in seen):
            try:
                seen.append(lines.get(timeout=2))
            except queue.Empty:
                assert server.poll() is None, "langkit serve exited:\n" + "".join(seen)
                assert time.monotonic() < deadline, "langkit serve printed no model line in 600 s:\n" + "".join(seen)
        printed = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in seen if line.startswith("  ")
                   and ":" in line}
        url, model = printed["base URL"], printed["model"]
        assert url == f"http://127.0.0.1:{port}/v1" and Path(model) == release.parent / "wolof-v1-merged"

        with OpenAI(base_url=url, api_key="EMPTY", max_retries=0) as client:
            answer = client.chat.completions.create(
                model=model, temperature=0, max_tokens=4,
                messages=[{"role": "system", "content": SYSTEM_IDENTITY},
                          {"role": "user", "content": translation_request("fra_Latn", "wol_Latn", "Il pleut.")}])
        content = answer.choices[0].message.content
        assert isinstance(content, str) and "<|" not in content  # the final channel's text, nothing of harmony

        flores = tmp_path / "flores" / "flores200_dataset" / "devtest"
        flores.mkdir(parents=True)
        (flores / "eng_Latn.devtest").write_text("The water is cold.\nThank you very much.\nGood morning.\n", "utf-8")
        (flores / "wol_Latn.devtest").write_text("Ndox mi dafa sedd.\nJërëjëf lool.\nJàmm nga fanaan.\n", "utf-8")
        out = tmp_path / "results"
        assert main(["-q", "eval", "suite", "--task", "flores200-devtest", "--data", str(tmp_path / "flores"),
                     "--system", f"adapted=run:{demo_run}", "--system", f"served=openai:{url}@{model}",
                     "--directions", "eng_Latn-wol_Latn", "--max-new-tokens", "4", "--batch-size", "1",
                     "--bootstrap", "0", "--out", str(out)]) == 0
        report = json.loads((out / "results.json").read_text(encoding="utf-8"))
        assert [(r["system"], r["n"]) for r in report["results"]] == [("adapted", 3), ("served", 3)]
        hyps = out / "outputs" / "flores200-devtest"
        assert (hyps / "served.eng_Latn-wol_Latn.hyp").read_text("utf-8") == \
            (hyps / "adapted.eng_Latn-wol_Latn.hyp").read_text("utf-8")

        # the release is as it was signed: the merged folder went beside it
        assert main(["-q", "publish", "verify", str(release), "--public-key", public_key]) == 0
        server.send_signal(signal.SIGINT)  # Ctrl-C
        assert server.wait(60) == 0
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # nothing listens any more: the server the command started is stopped too
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
