"""The train stage on the tiny gpt-oss (real 201,088-id vocabulary + new tokens), offline.

One 12-step run is shared by most tests (module fixture): it observes the very model object that
``train.run`` trains, so frozen weights can be compared bit for bit before and after.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from langkit import harmony
from langkit import train as train_mod
from langkit.config import RunConfig, TrainConfig
from langkit.harmony import IGNORE_INDEX
from langkit.rundir import RunDir
from langkit.tokenizer import BASE_VOCAB_SIZE, load_new_tokens, write_o200k_tiktoken
from langkit.train import (
    ExampleStream,
    check_vocabulary,
    collate,
    collate_packed,
    encode_records,
    load_adapted_model,
    load_examples,
    prepare_model,
    read_records,
    take_packed,
)
from tests.conftest import SAMPLE_TEXT

PIVOTS = {
    "wol_Latn": ("fra_Latn", ["Comment vas-tu ? Je suis là, merci.", "Combien coûte le pain au marché ?",
                              "Ma mère est allée au champ pour cultiver des arachides.",
                              "L'eau est froide, bois-la dans le verre."]),
    "swh_Latn": ("eng_Latn", ["Good morning? Very well, thank you.", "Our cows drink water at the river.",
                              "The children go to school every day.", "The price of bread at the market rose today."]),
}
MAX_STEPS = 12


def _records() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for lang, (pivot_lang, pivots) in PIVOTS.items():
        for i, pivot in enumerate(pivots[:2]):
            rows.append({"language": lang, "text": SAMPLE_TEXT[lang][i], "pivot_language": pivot_lang, "pivot_text": pivot})
        rows.append({"language": lang, "text": SAMPLE_TEXT[lang][2], "pivot_language": "", "pivot_text": ""})
    # Not in the run's languages: must be left out.
    rows.append({"language": "lin_Latn", "text": SAMPLE_TEXT["lin_Latn"][0], "pivot_language": "fra_Latn",
                 "pivot_text": "Bonjour ! Tu vas bien ?"})
    return [{"id": f"r{i}", **row, "source": "test", "license": "CC0-1.0", "file": "inline", "line": i}
            for i, row in enumerate(rows)]


def _config(**train: Any) -> RunConfig:
    settings: dict[str, Any] = dict(model="tiny", lora_r=4, lora_alpha=8, learning_rate=1e-2, warmup_steps=2,
                                    max_steps=MAX_STEPS, batch_size=2, max_length=128, save_every=4,
                                    keep_checkpoints=2)
    settings.update(train)
    cfg = RunConfig(name="test", languages=["wol_Latn", "swh_Latn"], train=TrainConfig(**settings))
    cfg.check()
    return cfg


def _make_run_dir(root: Path, tokenizer_folder: Path) -> RunDir:
    run_dir = RunDir(root)
    run_dir.dataset.mkdir(parents=True)
    Dataset.from_list(_records()).to_parquet(str(run_dir.split("train")))
    shutil.copytree(tokenizer_folder, run_dir.tokenizer)
    return run_dir


def _run_until_crash(cfg: RunConfig, run_dir: RunDir, crash_at: int, monkeypatch: Any) -> None:
    """Run training and stop it, as a crash would, when it reaches its ``crash_at``-th step (counting the
    steps of this run, after any resume); the real training step is back in place afterwards."""
    real_step = train_mod._training_step
    calls = []

    def crashing_step(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == crash_at:
            raise KeyboardInterrupt("simulated crash")
        return real_step(*args)

    monkeypatch.setattr(train_mod, "_training_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        train_mod.run(cfg, run_dir)
    monkeypatch.setattr(train_mod, "_training_step", real_step)


def _effective_rows(model: Any, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows the model really uses for ``ids`` (through PEFT's trainable-token wrappers): [N, H] each."""
    with torch.no_grad():
        embed = model.get_input_embeddings()(torch.tensor(ids))
        hidden = embed.shape[-1]
        head = model.get_output_embeddings()(torch.eye(hidden)).T[ids]  # lm_head(I) = W^T, [H, V]
    return embed.clone(), head.clone()


def _read_log(run_dir: RunDir) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir.train / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(extended_tokenizer, tmp_path_factory) -> dict[str, Any]:
    """A 12-step run, with the model object it trained and a snapshot of that model before training."""
    tokenizer, new_tokens, folder = extended_tokenizer
    run_dir = _make_run_dir(tmp_path_factory.mktemp("train_run"), folder)
    cfg = _config()
    seen: dict[str, Any] = {}
    new_ids = [t.id for t in new_tokens]
    old_ids = [0, 1000, 199999, 200002, BASE_VOCAB_SIZE - 1]

    def capture(train: TrainConfig, tokenizer: Any, tokens: Any) -> Any:
        model = prepare_model(train, tokenizer, tokens)
        seen["model"] = model
        seen["params"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        seen["new_rows"] = _effective_rows(model, new_ids)
        seen["old_rows"] = _effective_rows(model, old_ids)
        return model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "prepare_model", capture)
        out = train_mod.run(cfg, run_dir)
    assert out == run_dir.train
    examples = load_examples(run_dir.split("train"), tokenizer, cfg.languages, cfg.train)
    return {**seen, "cfg": cfg, "run_dir": run_dir, "examples": examples, "new_tokens": new_tokens,
            "new_ids": new_ids, "old_ids": old_ids}


def test_loss_goes_down(trained):
    rows = _read_log(trained["run_dir"])
    assert [r["step"] for r in rows] == list(range(1, MAX_STEPS + 1))
    assert all({"step", "loss", "lr", "tokens"} <= r.keys() for r in rows)
    lrs = [r["lr"] for r in rows]  # warm-up over 2 steps to the peak, then linear decay
    assert lrs[:2] == pytest.approx([5e-3, 1e-2]) and lrs[-1] == pytest.approx(1e-2 / (MAX_STEPS - 2))
    # The tiny model's lm_head is random (std 0.02) and frozen except for the new rows, so its loss cannot
    # fall far below ln(201,128) = 12.2 nats; a few tenths of a nat over 12 steps is real learning here.
    first = sum(r["loss"] for r in rows[:3]) / 3
    last = sum(r["loss"] for r in rows[-3:]) / 3
    assert last < first - 0.2, (first, last)


def test_frozen_base_weights_unchanged(trained):
    model, before = trained["model"], trained["params"]
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    for name in ("base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight",
                 "base_model.model.model.layers.1.mlp.experts.base_layer.base_layer.gate_up_proj",
                 "base_model.model.model.layers.1.mlp.experts.base_layer.base_layer.down_proj",
                 "base_model.model.model.embed_tokens.token_adapter.base_layer.weight",
                 "base_model.model.lm_head.token_adapter.base_layer.weight"):
        assert name in frozen
    changed = [n for n, p in frozen.items() if not torch.equal(p, before[n])]
    assert changed == []
    # Old rows as the model really uses them (through the trainable-token wrappers) are unchanged too.
    embed_old, head_old = _effective_rows(model, trained["old_ids"])
    assert torch.equal(embed_old, trained["old_rows"][0]) and torch.equal(head_old, trained["old_rows"][1])


def test_lora_and_new_token_rows_changed(trained):
    model, before = trained["model"], trained["params"]
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for layer in ("self_attn.q_proj", "self_attn.v_proj", "mlp.experts", "mlp.experts.base_layer"):
        for ab in ("lora_A", "lora_B"):
            name = f"base_model.model.model.layers.0.{layer}.{ab}.default.weight"
            assert not torch.equal(trainable[name], before[name]), name
    # The new tokens the training data uses (as input, hence also as target) moved in both matrices
    # (untied embeddings); the input rows of new tokens it never uses get no gradient and stay put.
    used = {i for e in trained["examples"] for i in e.input_ids}
    moved = [i in used for i in trained["new_ids"]]
    assert sum(moved) >= 5
    embed_new, head_new = _effective_rows(model, trained["new_ids"])
    embed_init, head_init = trained["new_rows"]
    embed_delta = (embed_new - embed_init).abs().amax(dim=1)
    head_delta = (head_new - head_init).abs().amax(dim=1)
    assert ((embed_delta > 0).tolist()) == moved
    assert all(d > 0 for d, m in zip(head_delta.tolist(), moved, strict=True) if m)


def test_new_rows_initialised_to_mean_of_base_rows(trained):
    before = trained["params"]
    embed_w = before["base_model.model.model.embed_tokens.token_adapter.base_layer.weight"]
    head_w = before["base_model.model.lm_head.token_adapter.base_layer.weight"]
    embed_init, head_init = trained["new_rows"]
    for i, token in enumerate(trained["new_tokens"]):
        assert torch.allclose(embed_init[i], embed_w[token.base_ids].mean(dim=0), atol=1e-7)
        assert torch.allclose(head_init[i], head_w[token.base_ids].mean(dim=0), atol=1e-7)


def test_outputs_and_reload_give_same_logits(trained):
    run_dir, cfg, model = trained["run_dir"], trained["cfg"], trained["model"]
    assert {p.name for p in run_dir.adapter.iterdir()} >= {"adapter_model.safetensors", "adapter_config.json"}
    weights = load_file(str(run_dir.adapter / "adapter_model.safetensors"))
    assert all(v.shape[0] < 10_000 for v in weights.values())  # rows of the new tokens, never whole embeddings
    assert any("trainable_tokens" in k and "lm_head" in k for k in weights)
    assert any("experts" in k and "lora_A" in k for k in weights)
    assert sorted(p.name for p in run_dir.checkpoints.iterdir()) == ["step-000008", "step-000012"]
    assert (run_dir.checkpoints / "step-000012" / "trainer_state.pt").is_file()
    meta = json.loads((run_dir.train / "metadata.json").read_text())
    assert meta["steps"] == MAX_STEPS and meta["new_tokens"] == len(trained["new_ids"])
    assert meta["tokens_seen"] == sum(r["tokens"] for r in _read_log(run_dir))
    assert meta["final_loss"] < meta["first_loss"]
    assert 0 < meta["trainable_parameters"] < meta["total_parameters"]
    # Estimated here; measured where the CPUs' RAPL counters are readable (langkit/train/energy.py).
    assert meta["energy"]["method"] in {"estimated-tdp", "measured-rapl"} and meta["energy"]["kwh"] >= 0
    try:
        import matplotlib  # noqa: F401

        assert (run_dir.train / "loss.png").is_file()
    except ImportError:
        assert not (run_dir.train / "loss.png").exists()

    reloaded, tokenizer = load_adapted_model(run_dir, cfg)
    assert len(tokenizer) == BASE_VOCAB_SIZE + len(trained["new_ids"])
    ids = tokenizer("Sama yaay dafa dem ca tool ba. Watoto wanakwenda shuleni.", add_special_tokens=False)["input_ids"]
    assert any(i >= BASE_VOCAB_SIZE for i in ids)  # the sentence uses new tokens
    batch = torch.tensor([ids + trained["new_ids"][:5]])
    with torch.no_grad():
        expected = model(input_ids=batch).logits
        got = reloaded(input_ids=batch).logits
    assert torch.allclose(got, expected, atol=1e-5)


def test_examples_mask_the_prompt(extended_tokenizer):
    tokenizer, _, _ = extended_tokenizer
    records = _records()
    cfg = _config()
    wanted = [r for r in records if r["language"] in cfg.languages]
    examples = encode_records(wanted, tokenizer, cfg.train)
    pairs = sum(1 for r in wanted if r["pivot_text"])
    assert len(examples) == 2 * pairs + len(wanted)  # two directions per pair + every text as plain text
    assert len(encode_records(wanted, tokenizer, _config(monolingual=False).train)) == 2 * pairs

    first = wanted[0]  # wol_Latn with a French pivot: fra -> wol first, then wol -> fra
    for example, (src_lang, tgt_lang, src, tgt) in zip(examples[:2], [
        (first["pivot_language"], first["language"], first["pivot_text"], first["text"]),
        (first["language"], first["pivot_language"], first["text"], first["pivot_text"]),
    ], strict=True):
        prompt = tokenizer(harmony.render_prompt(src_lang, tgt_lang, src), add_special_tokens=False)["input_ids"]
        assert example.input_ids[: len(prompt)] == prompt
        assert example.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
        answer = [t for t in example.labels if t != IGNORE_INDEX]
        assert tokenizer.decode(answer) == tgt + "<|return|>"
    mono = examples[2]
    assert mono.labels == mono.input_ids and tokenizer.decode(mono.input_ids) == first["text"] + "<|endoftext|>"

    batch = collate([examples[2], examples[0]], pad_id=tokenizer.pad_token_id)
    short = len(examples[2].input_ids)
    assert batch["input_ids"].shape == (2, len(examples[0].input_ids))
    assert batch["attention_mask"][0].tolist() == [1] * short + [0] * (batch["input_ids"].shape[1] - short)
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][0, short:] == tokenizer.pad_token_id).all()


def test_merged_export_gives_the_adapted_models_logits(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, cfg, adapted = trained["run_dir"], trained["cfg"], trained["model"]
    out = train_mod.export_merged(run_dir, cfg)
    assert out == run_dir.merged and not any(p.name.startswith(".") for p in run_dir.train.iterdir())
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files and "adapter_config.json" not in files
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert merged.config.vocab_size == train_mod.tokenizer_size(tokenizer) == BASE_VOCAB_SIZE + len(trained["new_ids"])
    assert merged.get_input_embeddings().weight.shape[0] == merged.get_output_embeddings().weight.shape[0] == merged.config.vocab_size
    assert not any("lora" in name or "trainable_tokens" in name for name, _ in merged.named_parameters())
    ids = torch.tensor([[200006, 0, 1000, *trained["new_ids"][:6], 199999, *trained["new_ids"][-3:]]])
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    assert got.shape == expected.shape == (1, ids.shape[1], merged.config.vocab_size)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_resume_matches_uninterrupted_run(trained, extended_tokenizer, tmp_path, monkeypatch):
    _, _, folder = extended_tokenizer
    run_dir = _make_run_dir(tmp_path / "run", folder)
    cfg = _config()
    _run_until_crash(cfg, run_dir, 6, monkeypatch)
    assert [p.name for p in run_dir.checkpoints.iterdir()] == ["step-000004"]
    assert len(_read_log(run_dir)) == 5

    train_mod.run(cfg, run_dir)  # resumes from step 4
    expected_log = _read_log(trained["run_dir"])
    got_log = _read_log(run_dir)
    assert [r["step"] for r in got_log] == list(range(1, MAX_STEPS + 1))
    assert [r["loss"] for r in got_log] == pytest.approx([r["loss"] for r in expected_log], abs=1e-5)
    expected = load_file(str(trained["run_dir"].adapter / "adapter_model.safetensors"))
    got = load_file(str(run_dir.adapter / "adapter_model.safetensors"))
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.allclose(got[key], expected[key], atol=1e-6), key
    meta = json.loads((run_dir.train / "metadata.json").read_text())
    assert meta["resumed_from"] == 4 and meta["steps"] == MAX_STEPS

    # The checkpoint of a finished run: no extra steps, same adapter.
    train_mod.run(cfg, run_dir)
    assert len(_read_log(run_dir)) == MAX_STEPS
    meta = json.loads((run_dir.train / "metadata.json").read_text())
    assert meta["resumed_from"] == MAX_STEPS and meta["steps"] == MAX_STEPS
    again = load_file(str(run_dir.adapter / "adapter_model.safetensors"))
    assert all(torch.equal(again[k], got[k]) for k in got)


def test_vocabulary_mismatch_fails_before_training(extended_tokenizer, tmp_path):
    tokenizer, new_tokens, folder = extended_tokenizer
    run_dir = _make_run_dir(tmp_path / "run", folder)
    # new_tokens.json that lost its last 3 tokens: the tokenizer has ids the model would have no rows for.
    items = json.loads(run_dir.new_tokens.read_text())
    run_dir.new_tokens.write_text(json.dumps(items[:-3]))
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        train_mod.run(_config(), run_dir)
    assert not run_dir.train.exists()

    n = len(new_tokens)
    assert check_vocabulary(BASE_VOCAB_SIZE + n, BASE_VOCAB_SIZE, new_tokens) == BASE_VOCAB_SIZE + n
    assert check_vocabulary(BASE_VOCAB_SIZE, BASE_VOCAB_SIZE, []) == BASE_VOCAB_SIZE
    with pytest.raises(ValueError, match="vocabulary mismatch"):  # extended from a smaller base
        check_vocabulary(BASE_VOCAB_SIZE + n, BASE_VOCAB_SIZE + 10, new_tokens)
    with pytest.raises(ValueError, match="vocabulary mismatch"):  # a base tokenizer with new_tokens.json
        check_vocabulary(BASE_VOCAB_SIZE, BASE_VOCAB_SIZE, new_tokens)
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        prepare_model(_config().train, tokenizer, [])
    assert load_new_tokens(folder / "new_tokens.json") == new_tokens


def test_no_examples_fails_early(extended_tokenizer, tmp_path):
    tokenizer, _, folder = extended_tokenizer
    run_dir = _make_run_dir(tmp_path / "run", folder)
    assert {r["language"] for r in read_records(run_dir.split("train"), ["lin_Latn"])} == {"lin_Latn"}
    with pytest.raises(ValueError, match="no training example"):
        load_examples(run_dir.split("train"), tokenizer, ["bci_Latn"], _config().train)
    with pytest.raises(ValueError, match="no training example"):  # every answer truncated away
        load_examples(run_dir.split("train"), tokenizer, ["wol_Latn"], _config(max_length=8, monolingual=False).train)


def test_prompt_matches_openai_harmony(base_tokenizer, tmp_path, monkeypatch):
    import openai_harmony as oh
    write_o200k_tiktoken(tmp_path / "o200k_base.tiktoken")
    monkeypatch.setenv("TIKTOKEN_ENCODINGS_BASE", str(tmp_path))
    encoding = oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)
    source, target = "L'eau est froide, bois-la dans le verre.", "Ndox mi dafa sedd, naan ko ci kaas bi."
    messages = [
        oh.Message.from_role_and_content(oh.Role.SYSTEM, harmony.SYSTEM_MESSAGE),
        oh.Message.from_role_and_content(oh.Role.USER, harmony.translation_request("fra_Latn", "wol_Latn", source)),
    ]
    prompt = base_tokenizer(harmony.render_prompt("fra_Latn", "wol_Latn", source), add_special_tokens=False)["input_ids"]
    header = base_tokenizer("<|channel|>final<|message|>", add_special_tokens=False)["input_ids"]
    completion = encoding.render_conversation_for_completion(oh.Conversation.from_messages(messages), oh.Role.ASSISTANT)
    assert prompt == list(completion) + header
    # The whole training example equals harmony's own rendering for training (answer ends in <|return|>).
    answer = oh.Message.from_role_and_content(oh.Role.ASSISTANT, target).with_channel("final")
    rendered = encoding.render_conversation_for_training(oh.Conversation.from_messages([*messages, answer]))
    example = harmony.encode_translation(base_tokenizer, "fra_Latn", "wol_Latn", source, target, max_length=4096)
    assert example.input_ids == list(rendered)


# --------------------------------------------------------------------------------------------------
# Packing, langkit_sink attention and the chunked loss in the train stage
# --------------------------------------------------------------------------------------------------


def _example(ids: list[int], prompt: int) -> harmony.Example:
    return harmony.Example(list(ids), [IGNORE_INDEX] * prompt + list(ids[prompt:]))


def test_collate_packed_keeps_examples_apart():
    a, b, c = _example([5, 6, 7, 8], 2), _example([9, 10, 11], 0), _example([12, 13], 0)
    batch = collate_packed([[a, b], [c]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11], [12, 13, 0, 0, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2], [0, 1, 0, 1, 2, 3, 4]]
    assert batch["attention_mask"].tolist() == [[1] * 7, [1, 1, 0, 0, 0, 0, 0]]
    # b's first token is not a target of a's last token; labels[0] of an example is never a target anyway.
    assert batch["labels"].tolist() == [[-100, -100, 7, 8, -100, 10, 11], [-100, 13] + [-100] * 5]


def test_take_packed_first_fit_in_stream_order():
    lengths = [60, 50, 30, 70, 20, 10]
    stream = ExampleStream(len(lengths), seed=3)
    probe = ExampleStream(len(lengths), seed=3)
    order = probe.take(len(lengths))
    rows = take_packed(stream, lengths, rows=2, capacity=100)
    taken = [i for row in rows for i in row]
    assert sorted(taken) == sorted(order[:len(taken)])  # a prefix of the stream, nothing skipped
    assert all(sum(lengths[i] for i in row) <= 100 for row in rows) and len(rows) <= 2
    following = order[len(taken)]  # the example that ended the step opens the next one
    assert stream.peek() == following and stream.state()["offset"] == len(taken)
    assert lengths[following] > 100 - min(sum(lengths[i] for i in row) for row in rows)
    # A data set smaller than one step: every example once, never twice in a step.
    small = ExampleStream(3, seed=0)
    assert sorted(i for row in take_packed(small, [5, 5, 5], rows=4, capacity=100) for i in row) == [0, 1, 2]
    with pytest.raises(ValueError, match="max_length"):
        take_packed(ExampleStream(1, seed=0), [200], rows=1, capacity=100)


def _windowed_tiny() -> Any:
    """The tiny gpt-oss (real vocabulary) with an 8-token sliding window, so that packed rows cross it."""
    from transformers import GptOssForCausalLM

    from langkit.models import gpt_oss_config

    config = gpt_oss_config("tiny")
    config.sliding_window = 8
    torch.manual_seed(0)
    model = GptOssForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.sinks.normal_(0, 1.0)
    return model


@pytest.mark.parametrize("attention,chunked", [("eager", False), ("langkit_sink", False), ("langkit_sink", True)])
def test_packed_batch_matches_examples_one_by_one(attention, chunked):
    from langkit.attention import set_attention
    from langkit.loss import causal_lm_loss

    model = _windowed_tiny()
    set_attention(model, attention)
    torch.manual_seed(3)
    examples = [_example(torch.randint(0, 200_000, (n,)).tolist(), prompt) for n, prompt in ((23, 9), (17, 0), (30, 12))]
    train = TrainConfig(attention=attention, packing=True, batch_size=2, max_length=48, chunked_loss=chunked,
                        loss_chunk_size=16)
    stream = ExampleStream(len(examples), seed=0)
    batch = train_mod.next_batch(stream, examples, train, pad_id=0, sliding_window=8)
    assert batch.examples == 3 and batch.tokens == 70 and batch.inputs["input_ids"].shape[0] == 2
    assert isinstance(batch.inputs["attention_mask"], dict) == (attention == "eager")

    def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits[:-1], labels[1:], ignore_index=IGNORE_INDEX, reduction="none")

    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.inputs.items() if k != "labels"}).logits
        loss = causal_lm_loss(model, batch.inputs, train.loss_chunk_size) if chunked else model(**batch.inputs).loss
        input_ids, positions = batch.inputs["input_ids"], batch.inputs["position_ids"]
        total, count = 0.0, 0
        for e in examples:
            alone = model(input_ids=torch.tensor([e.input_ids])).logits[0]
            # find the example in the packed rows: its ids, starting where position 0 is
            row, start = next((r, s) for r in range(input_ids.shape[0]) for s in range(input_ids.shape[1])
                              if positions[r, s] == 0 and input_ids[r, s:s + len(e.input_ids)].tolist() == e.input_ids)
            span = packed[row, start:start + len(e.input_ids)]
            torch.testing.assert_close(span, alone, atol=2e-5, rtol=1e-5)
            labels = torch.tensor(e.labels)
            expected = token_losses(alone, labels)
            got = token_losses(span, batch.inputs["labels"][row, start:start + len(e.input_ids)])
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)  # per-example, token by token
            total += float(expected.sum())
            count += int((labels[1:] != IGNORE_INDEX).sum())
        assert loss.item() == pytest.approx(total / count, abs=1e-5)


def test_langkit_path_trains_packed_and_resumes_exactly(extended_tokenizer, tmp_path, monkeypatch):
    _, _, folder = extended_tokenizer
    settings = dict(attention="langkit_sink", chunked_loss=True, loss_chunk_size=64, packing=True, max_steps=6,
                    save_every=3, batch_size=2, max_length=128)
    reference = _make_run_dir(tmp_path / "uninterrupted", folder)
    train_mod.run(_config(**settings), reference)
    rows = _read_log(reference)
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert all(r["examples"] >= 2 and 0 < r["efficiency"] <= 1 for r in rows)
    assert sum(r["examples"] for r in rows) > 6 * 2  # rows hold several examples
    meta = json.loads((reference.train / "metadata.json").read_text())
    assert meta["packing"] and meta["attention"] == "langkit_sink" and meta["chunked_loss"]
    assert 0.5 < meta["packing_efficiency"] <= 1

    run_dir = _make_run_dir(tmp_path / "crashed", folder)
    _run_until_crash(_config(**settings), run_dir, 5, monkeypatch)
    train_mod.run(_config(**settings), run_dir)  # resumes from step 3, packed stream position included
    got = _read_log(run_dir)
    assert [(r["step"], r["tokens"], r["examples"]) for r in got] == [(r["step"], r["tokens"], r["examples"]) for r in rows]
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in rows], abs=1e-5)
    assert json.loads((run_dir.train / "metadata.json").read_text())["packing_efficiency"] == meta["packing_efficiency"]
    expected = load_file(str(reference.adapter / "adapter_model.safetensors"))
    adapter = load_file(str(run_dir.adapter / "adapter_model.safetensors"))
    for key in expected:
        assert torch.allclose(adapter[key], expected[key], atol=1e-6), key


def test_langkit_path_matches_default_path(trained, extended_tokenizer, tmp_path):
    # Same batches (no packing), other attention kernel and loss: the same 12-step run within float32 noise.
    _, _, folder = extended_tokenizer
    run_dir = _make_run_dir(tmp_path / "run", folder)
    train_mod.run(_config(attention="langkit_sink", chunked_loss=True, loss_chunk_size=50), run_dir)
    expected = _read_log(trained["run_dir"])
    got = _read_log(run_dir)
    assert [r["tokens"] for r in got] == [r["tokens"] for r in expected]
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in expected], abs=2e-4)
