"""Two processes (DDP over gloo, on CPU) train like one process with the same global batch.

The 2-process run goes through ``accelerate launch`` with the project's own ``configs/accelerate/ddp.yaml``
(one process per "GPU": on a machine without one, langkit asks accelerate for DDP over gloo), at
``train.batch_size=1`` per process; the reference runs in this process at ``batch_size=2``. Same global
batch, same examples, so the same adapter up to float32 summation order. Its checkpoint, written by the main
process alone, then resumes in one process to the reference's adapter: the data position, optimizer and
schedule in it are the global run's.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from langkit import train as train_mod
from langkit.config import save_config
from tests.test_train import _config, _make_run_dir

REPO = Path(__file__).resolve().parents[1]
MAX_STEPS = 3
SAVE_EVERY = 2

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train" / "train_log.jsonl").read_text().splitlines()]


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "train" / "adapter" / "adapter_model.safetensors"))


def _assert_same_adapter(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], learning_rate: float) -> None:
    """Equal up to float32 summation order. AdamW divides by the gradient's running magnitude, so an element
    whose gradient is near 0 can move by up to a learning rate on a rounding difference alone. A real
    difference (another batch, a lost step) moves every element by about a learning rate, so both bounds are
    in learning rates: every element within a tenth of one, and the root mean square of the differences
    within a hundredth of one (a tensor's own norm is no scale: LoRA's B starts at zero)."""
    assert got.keys() == expected.keys()
    for key in expected:
        diff = (got[key] - expected[key]).abs()
        assert diff.max() <= learning_rate / 10, (key, diff.max())
        rms = diff.norm() / diff.numel() ** 0.5
        assert rms <= learning_rate / 100, (key, rms)


def test_two_processes_match_one_process_with_the_same_global_batch(extended_tokenizer, tmp_path):
    _, _, folder = extended_tokenizer
    settings = dict(max_steps=MAX_STEPS, save_every=SAVE_EVERY, keep_checkpoints=2, max_length=96)
    config = tmp_path / "config.yaml"
    save_config(_config(batch_size=1, **settings), config)  # per process: global batch 2 on 2 processes
    distributed = _make_run_dir(tmp_path / "two", folder)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false",
               LANGKIT_NO_PROGRESS="1", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    launcher = Path(sys.executable).with_name("accelerate")
    command = [str(launcher), "launch", "--config_file", str(REPO / "configs/accelerate/ddp.yaml"),
               "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(_free_port()),
               "-m", "langkit", "train", str(config), "--out", str(distributed.root)]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    reference = _make_run_dir(tmp_path / "one", folder)
    train_mod.run(_config(batch_size=2, **settings), reference)

    meta = json.loads((distributed.train / "metadata.json").read_text())
    assert (meta["processes"], meta["global_batch_size"], meta["distributed"]) == (2, 2, "MULTI_CPU")
    # One writer: each step logged once, the checkpoints and adapter whole, nothing half written.
    got, expected = _read_log(distributed.root), _read_log(reference.root)
    assert [r["step"] for r in got] == list(range(1, MAX_STEPS + 1))
    assert [(r["tokens"], r["examples"]) for r in got] == [(r["tokens"], r["examples"]) for r in expected]
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in expected], abs=1e-5)
    assert sorted(p.name for p in distributed.checkpoints.iterdir()) == ["step-000002", "step-000003"]
    assert not any(p.name.startswith(".") for p in distributed.train.iterdir())
    two, one = _adapter(distributed.root), _adapter(reference.root)
    assert two.keys() == one.keys() and any("experts" in k for k in one)
    _assert_same_adapter(two, one, _config().train.learning_rate)
    assert any(not torch.equal(one[k], torch.zeros_like(one[k])) for k in one if "lora_B" in k)

    # The 2-process checkpoint of step 2 resumes in one process (same global batch) to the same adapter.
    resumed = _make_run_dir(tmp_path / "resumed", folder)
    shutil.copytree(distributed.checkpoints / "step-000002", resumed.checkpoints / "step-000002")
    shutil.copy(distributed.train / "train_log.jsonl", resumed.train / "train_log.jsonl")
    train_mod.run(_config(batch_size=2, **settings), resumed)
    assert json.loads((resumed.train / "metadata.json").read_text())["resumed_from"] == SAVE_EVERY
    again = _adapter(resumed.root)
    _assert_same_adapter(again, one, _config().train.learning_rate)


def test_adapter_gathered_from_shards_saves_like_the_model_itself(extended_tokenizer, tmp_path):
    # FSDP2 / ZeRO-3 save the trainable tensors gathered by name (trainable_state_dict) through
    # save_pretrained(state_dict=...): same files as the model saving its own tensors. Here nothing is really
    # sharded (no GPUs); a stand-in accelerator takes the sharded path with plain tensors.
    from types import SimpleNamespace

    from langkit.train.checkpoints import save_adapter
    from langkit.train.distributed import LossModule, trainable_state_dict

    tokenizer, new_tokens, _ = extended_tokenizer
    model = train_mod.prepare_model(_config().train, tokenizer, new_tokens)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and "lora_B" in name:
                p.normal_()  # B starts at zero: give the comparison something to compare
    fake = SimpleNamespace(distributed_type=SimpleNamespace(name="FSDP"), unwrap_model=lambda m: m)
    gathered = trainable_state_dict(fake, LossModule(model, None))
    assert gathered is not None and all(k.startswith("base_model.model.") for k in gathered)
    save_adapter(model, tmp_path / "own")
    save_adapter(model, tmp_path / "gathered", state_dict=gathered)
    own = load_file(str(tmp_path / "own" / "adapter_model.safetensors"))
    got = load_file(str(tmp_path / "gathered" / "adapter_model.safetensors"))
    assert own.keys() == got.keys() and any("trainable_tokens" in k for k in own)
    assert all(torch.equal(own[k], got[k]) for k in own)


def test_only_the_train_stage_runs_under_several_processes(tmp_path, monkeypatch):
    from langkit import pipeline

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="corpus, eval cannot run under several processes"):
        pipeline.run_pipeline(_config(), tmp_path / "run", ["corpus", "train", "eval"])
    with pytest.raises(ValueError, match="tokenizer cannot run under several processes"):
        pipeline.run_stage("tokenizer", _config(), tmp_path / "run")
    assert not (tmp_path / "run").exists()
