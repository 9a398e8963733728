"""Recipe options of the train stage: expert LoRA rank, the new rows' learning rate, the data mixture, the
energy figure (measured or estimated), and the errors raised before any compute."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from langkit import train as train_mod
from langkit.config import ConfigError, TrainConfig, config_from_dict
from langkit.train import (
    EXPERT_PARAMETERS,
    MixedStream,
    expert_lora,
    load_training_data,
    make_optimizer,
    prepare_model,
    take_packed,
)
from langkit.train import energy as energy_mod
from langkit.train import model as model_mod
from tests.test_train import _config, _make_run_dir, _read_log, _run_until_crash

# --------------------------------------------------------------------------------------------------
# Expert LoRA rank and the new rows' learning rate
# --------------------------------------------------------------------------------------------------


def test_experts_get_their_own_rank_and_alpha(extended_tokenizer, tmp_path):
    tokenizer, new_tokens, _ = extended_tokenizer
    train = _config(lora_r=4, lora_alpha=8, lora_expert_r=2).train
    assert expert_lora(train) == (2, 4.0)  # alpha follows the attention's ratio alpha / r = 2
    model = prepare_model(train, tokenizer, new_tokens)
    experts = 4  # the tiny model's
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    for layer in (0, 1):
        prefix = f"base_model.model.model.layers.{layer}"
        assert shapes[f"{prefix}.self_attn.q_proj.lora_A.default.weight"][0] == 4
        # PEFT stacks the experts' pairs: lora_A is [E x r, in] for gate_up_proj (inner) and down_proj.
        assert shapes[f"{prefix}.mlp.experts.base_layer.lora_A.default.weight"][0] == experts * 2
        assert shapes[f"{prefix}.mlp.experts.lora_A.default.weight"][0] == experts * 2
        q = model.get_submodule(f"{prefix}.self_attn.q_proj")
        wrapper = model.get_submodule(f"{prefix}.mlp.experts")
        assert q.r["default"] == 4 and wrapper.r["default"] == 2
        assert q.scaling["default"] == wrapper.scaling["default"] == 2.0
    model.save_pretrained(str(tmp_path), save_embedding_layers=False)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["rank_pattern"] == {name: 2 for name in EXPERT_PARAMETERS}

    explicit = _config(lora_r=4, lora_alpha=8, lora_expert_r=2, lora_expert_alpha=6).train
    assert expert_lora(explicit) == (2, 6.0)
    # Unset: the experts keep lora_r and lora_alpha, and the config carries no pattern.
    default = model_mod.lora_config(_config(lora_r=4, lora_alpha=8).train, [])
    assert default.rank_pattern == {} and default.alpha_pattern == {}


def test_new_rows_get_their_own_learning_rate(extended_tokenizer):
    tokenizer, new_tokens, _ = extended_tokenizer
    train = _config(learning_rate=1e-2, embedding_learning_rate=3e-3, warmup_steps=2).train
    model = prepare_model(train, tokenizer, new_tokens)
    optimizer = make_optimizer(model, train)
    names = {id(p): n for n, p in model.named_parameters()}
    lora, rows = optimizer.param_groups
    assert (lora["lr"], rows["lr"]) == (1e-2, 3e-3) and rows["name"] == "new_token_rows"
    assert {names[id(p)] for p in rows["params"]} == {
        "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta.default",
        "base_model.model.lm_head.token_adapter.trainable_tokens_delta.default",
    }
    assert all("lora_" in names[id(p)] for p in lora["params"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {names[id(p)] for g in optimizer.param_groups for p in g["params"]} == trainable
    # The schedule scales both peaks alike: half of each at the first warm-up step.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: train_mod.lr_factor(i, 2, train.max_steps))
    assert scheduler.get_last_lr() == pytest.approx([5e-3, 1.5e-3])
    # Unset: one group at learning_rate (as before the option existed).
    single = make_optimizer(model, _config(learning_rate=1e-2).train)
    assert len(single.param_groups) == 1 and single.param_groups[0]["lr"] == 1e-2


# --------------------------------------------------------------------------------------------------
# Data mixture
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [{"monolingual": 0.3, "translation": 0.7}, {"monolingual": 1, "translation": 3},
                                     {"monolingual": 0.05, "translation": 0.95}])
def test_mixed_stream_follows_the_weights_and_resumes(weights):
    pools = {"monolingual": list(range(0, 7)), "translation": list(range(7, 20))}
    kind_of = {i: k for k, ids in pools.items() for i in ids}
    total = sum(weights.values())
    stream = MixedStream(pools, weights, seed=5)
    drawn = stream.take(400)
    for n in range(1, len(drawn) + 1):  # every prefix, to within one example
        for kind, weight in weights.items():
            got = sum(1 for i in drawn[:n] if kind_of[i] == kind)
            assert abs(got - weight / total * n) <= 1, (kind, n, got)
    # Each kind cycles through all its examples (a shuffle per pass), whatever its share.
    mono = [i for i in drawn if kind_of[i] == "monolingual"][:14]
    assert sorted(mono[:7]) == sorted(mono[7:14]) == pools["monolingual"]

    # Resume: a stream restored from a saved position continues with the same indices, peek included.
    first = MixedStream(pools, weights, seed=5)
    first.take(37)
    saved = json.loads(json.dumps(first.state()))  # what a checkpoint keeps (plain numbers)
    restored = MixedStream(pools, weights, seed=5)
    restored.load_state(saved)
    assert restored.peek() == first.peek() and restored.take(100) == first.take(100)
    with pytest.raises(ValueError, match="train.mix"):
        MixedStream(pools, {"monolingual": 0.5, "translation": 0.5}, seed=5).load_state(saved)
    # Packed steps take from a mixed stream in stream order, too.
    probe = MixedStream(pools, weights, seed=5)
    order = probe.take(10)
    packed = take_packed(MixedStream(pools, weights, seed=5), [10] * 20, rows=2, capacity=30)
    assert [i for row in packed for i in row] == order[:6]


def test_mixed_run_follows_the_weights_and_resumes_exactly(extended_tokenizer, tmp_path, monkeypatch):
    _, _, folder = extended_tokenizer
    settings: dict[str, Any] = dict(mix={"monolingual": 0.25, "translation": 0.75}, max_steps=4, save_every=2,
                                    batch_size=2, max_length=96)
    # A RAPL counter that moves 1 J per reading, so the run's energy is "measured" (and carried over a resume).
    ticks = {"n": 0}

    def fake_rapl(root: Path = energy_mod.POWERCAP) -> dict[str, tuple[int, int]]:
        ticks["n"] += 1
        return {"intel-rapl:0": (ticks["n"] * 1_000_000, 2**32)}

    monkeypatch.setattr(energy_mod, "read_rapl", fake_rapl)
    reference = _make_run_dir(tmp_path / "uninterrupted", folder)
    train_mod.run(_config(**settings), reference)
    rows = _read_log(reference)
    kinds = [r["kinds"] for r in rows]
    assert sum(k["monolingual"] for k in kinds) == 2 and sum(k["translation"] for k in kinds) == 6
    meta = json.loads((reference.train / "metadata.json").read_text())
    assert meta["examples_seen_by_kind"] == {"monolingual": 2, "translation": 6}
    assert meta["mix"] == settings["mix"] and meta["examples_by_kind"]["monolingual"] > 0
    assert meta["energy"]["method"] == "measured-rapl" and meta["energy"]["joules"] > 0

    run_dir = _make_run_dir(tmp_path / "crashed", folder)
    _run_until_crash(_config(**settings), run_dir, 3, monkeypatch)
    train_mod.run(_config(**settings), run_dir)  # resumes from step 2, mixture position included
    got = _read_log(run_dir)
    assert [(r["step"], r["tokens"], r["kinds"]) for r in got] == [(r["step"], r["tokens"], r["kinds"]) for r in rows]
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in rows], abs=1e-5)
    resumed = json.loads((run_dir.train / "metadata.json").read_text())
    assert resumed["resumed_from"] == 2 and resumed["examples_seen_by_kind"] == meta["examples_seen_by_kind"]
    assert resumed["energy"]["method"] == "measured-rapl"
    expected = load_file(str(reference.adapter / "adapter_model.safetensors"))
    adapter = load_file(str(run_dir.adapter / "adapter_model.safetensors"))
    for key in expected:
        assert torch.allclose(adapter[key], expected[key], atol=1e-6), key


# --------------------------------------------------------------------------------------------------
# Energy
# --------------------------------------------------------------------------------------------------


def _zone(root: Path, name: str, energy_uj: int, max_uj: int = 2**32) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "energy_uj").write_text(f"{energy_uj}\n")
    (root / name / "max_energy_range_uj").write_text(f"{max_uj}\n")


def test_rapl_reader_on_a_fake_powercap_folder(tmp_path):
    root = tmp_path / "powercap"
    _zone(root, "intel-rapl:0", 5_000_000)
    _zone(root, "intel-rapl:0:0", 1_000_000)  # a sub-zone (core) of package 0: not counted again
    _zone(root, "intel-rapl:1", 2**32 - 1_000_000)  # about to wrap
    assert energy_mod.read_rapl(root) == {"intel-rapl:0": (5_000_000, 2**32), "intel-rapl:1": (2**32 - 1_000_000, 2**32)}

    meter = energy_mod.EnergyMeter("cpu", powercap=root).start()
    assert meter.method == "measured-rapl"
    _zone(root, "intel-rapl:0", 7_500_000)  # +2.5 J
    _zone(root, "intel-rapl:0:0", 9_000_000)
    _zone(root, "intel-rapl:1", 500_000)  # wrapped: +1.5 J
    assert meter.stop() == ("measured-rapl", pytest.approx(4.0))
    # Read every step, the counter may wrap any number of times over a run: each step's progress is added.
    _zone(root, "intel-rapl:1", 2**32 - 1_000_000)
    long_run = energy_mod.EnergyMeter("cpu", powercap=root).start()
    for _ in range(3):  # each round: four steps of 2**30 uJ, one whole turn of the counter (it wraps once)
        for quarter in (1, 2, 3, 4):
            _zone(root, "intel-rapl:1", (2**32 - 1_000_000 + quarter * 2**30) % 2**32)
            long_run.tick()
    assert long_run.stop() == ("measured-rapl", pytest.approx(3 * 2**32 / 1e6))
    # Another process on the same machine: same method, but it does not count the packages twice.
    other = energy_mod.EnergyMeter("cpu", powercap=root, measure_cpu=False).start()
    assert other.stop() == ("measured-rapl", 0.0)

    report = energy_mod.report("measured-rapl", 7200.0, 10.0, "cpu", 1)
    assert report["method"] == "measured-rapl" and report["kwh"] == 0.002 and "RAPL" in report["note"]

    # Unreadable (here: not a file) or absent: estimated.
    (root / "intel-rapl:1" / "energy_uj").unlink()
    (root / "intel-rapl:1" / "energy_uj").mkdir()
    assert energy_mod.read_rapl(root) is None
    assert energy_mod.EnergyMeter("cpu", powercap=root).start().method == "estimated-tdp"
    assert energy_mod.read_rapl(tmp_path / "missing") is None


def test_nvml_reader_with_a_stand_in_pynvml(monkeypatch):
    import sys
    import types

    counter = {"mj": 1_000_000}
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: None  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda index: ("gpu", index)  # type: ignore[attr-defined]

    def total_energy(handle: Any) -> int:  # millijoules since the driver loaded
        counter["mj"] += 250_000
        return counter["mj"]

    fake.nvmlDeviceGetTotalEnergyConsumption = total_energy  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    meter = energy_mod.EnergyMeter("cuda", device_index=0).start()
    assert meter.method == "measured-nvml"
    assert meter.stop() == ("measured-nvml", pytest.approx(250.0))  # one reading later: +250,000 mJ
    report = energy_mod.report("measured-nvml", 3.6e6, 10.0, "cuda", 8)
    assert report == {"kwh": 1.0, "joules": 3.6e6, "method": "measured-nvml", "devices": 8,
                      "note": report["note"]} and "NVML" in report["note"]


def test_energy_estimate_says_it_is_estimated(monkeypatch):
    estimate = energy_mod.energy_estimate(3600.0, "cuda", devices=8)
    assert estimate["method"] == "estimated-tdp" and estimate["kwh"] == pytest.approx(5.6)  # 8 x 700 W x 1 h
    assert estimate["assumed_power_w"] == 700.0 and "not measured" in estimate["note"]
    assert energy_mod.report("estimated-tdp", 123.0, 3600.0, "cpu", 1)["kwh"] == pytest.approx(0.065)
    # A GPU whose NVML does not report energy (no pynvml, an older GPU) falls back to the estimate.
    monkeypatch.setattr(energy_mod, "_nvml_handle", lambda index: None)
    assert energy_mod.EnergyMeter("cuda").start().stop() == ("estimated-tdp", 0.0)


def test_model_card_says_how_energy_was_obtained():
    from langkit.publish import _energy_line

    assert _energy_line({"kwh": 0.25, "method": "measured-nvml"}) == \
        "- Training energy: 0.25 kWh (measured with the GPUs' NVML energy counters)"
    line = _energy_line(energy_mod.energy_estimate(3600.0, "cpu"))
    assert line.startswith("- Training energy: 0.065 kWh (estimated, not measured") and "65 W" in line
    assert _energy_line(None) == "- Training energy: not recorded"


# --------------------------------------------------------------------------------------------------
# Errors before compute
# --------------------------------------------------------------------------------------------------


def test_sequence_length_beyond_the_model_fails_before_training(extended_tokenizer, tmp_path, monkeypatch):
    _, _, folder = extended_tokenizer
    run_dir = _make_run_dir(tmp_path / "run", folder)

    def no_model(*args: Any) -> Any:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(train_mod, "prepare_model", no_model)
    with pytest.raises(ValueError, match=r"train.max_length=5000 is beyond tiny's max_position_embeddings=4096"):
        train_mod.run(_config(max_length=5000), run_dir)
    assert not run_dir.train.exists()


def test_mixture_kind_without_examples_fails_before_training(extended_tokenizer, tmp_path):
    tokenizer, _, folder = extended_tokenizer
    run_dir = _make_run_dir(tmp_path / "run", folder)
    # 12 tokens leave no translation answer (the harmony prompt alone is longer), only plain text.
    train = _config(max_length=12, mix={"translation": 1.0, "monolingual": 0.0}).train
    with pytest.raises(ValueError, match="train.mix.translation is 1 but .* gives no translation example"):
        load_training_data(run_dir.split("train"), tokenizer, ["wol_Latn"], train)


def test_lora_config_that_targets_nothing_fails_before_training(extended_tokenizer, monkeypatch):
    tokenizer, new_tokens, _ = extended_tokenizer
    monkeypatch.setattr(model_mod, "ATTENTION_MODULES", ["no_such_proj"])  # e.g. a model that is not gpt-oss
    with pytest.raises(ValueError, match="targets no parameter of this model"):
        prepare_model(_config(lora_experts=False, train_new_embeddings=False).train, tokenizer, new_tokens)


@pytest.mark.parametrize("override,message", [
    ({"mix": {"parallel": 1.0}}, "train.mix.parallel: unknown kind"),
    ({"mix": {"monolingual": -1.0}}, "train.mix.monolingual must be >= 0"),
    ({"mix": {"monolingual": 0.0, "translation": 0.0}}, "train.mix: at least one weight"),
    ({"mix": {"monolingual": 1.0}, "monolingual": False}, "train.mix.monolingual > 0 needs train.monolingual"),
    ({"embedding_learning_rate": 0.0}, "train.embedding_learning_rate must be > 0"),
    ({"lora_expert_r": 0}, "train.lora_expert_r must be > 0"),
    ({"lora_expert_alpha": -2}, "train.lora_expert_alpha must be > 0"),
    ({"lora_expert_r": 2, "lora_experts": False}, "need train.lora_experts: true"),
    ({"mix": "0.5"}, "train.mix must be a mapping"),
])
def test_recipe_options_are_checked(override, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"train": override})
    ok = config_from_dict({"train": {"mix": {"monolingual": 1, "translation": 3}, "lora_expert_r": 2,
                                     "embedding_learning_rate": 1e-3}})
    assert ok.train.mix == {"monolingual": 1.0, "translation": 3.0} and isinstance(ok.train, TrainConfig)


def test_non_finite_loss_stops_every_process_with_a_clear_error():
    from types import SimpleNamespace

    reduced = []

    def reduce(tensor, reduction):  # the other process saw a finite loss; this one did not
        reduced.append(reduction)
        return tensor + 0.0

    batch = SimpleNamespace(inputs={"input_ids": torch.zeros(1, 4, dtype=torch.long)}, loss_share=0.5)
    for processes in (1, 2):
        accelerator = SimpleNamespace(num_processes=processes, device=torch.device("cpu"), reduce=reduce)
        with pytest.raises(FloatingPointError, match="not finite .* on 1 process"):
            train_mod._training_step(lambda inputs: torch.tensor(float("nan")), batch, None, None, [], accelerator)
    assert reduced == ["sum"]  # the flag went through the all-reduce only with several processes
