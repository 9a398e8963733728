"""langkit.serve: the harmony chat template, the servable folder, and a real server (transformers serve) on CPU."""

from __future__ import annotations

import json

import pytest

from langkit.harmony import render_prompt, translation_request
from langkit.serve import (
    HARMONY_CHAT_TEMPLATE,
    SYSTEM_IDENTITY,
    ServerError,
    final_channel,
    start_server,
)

SENTENCES = ["Bonjour, comment allez-vous ?", "Le marché ouvre à huit heures.", "Il pleut depuis ce matin."]


def test_chat_template_renders_the_training_prompt(base_tokenizer):
    tokenizer = base_tokenizer
    saved = tokenizer.chat_template
    tokenizer.chat_template = HARMONY_CHAT_TEMPLATE
    try:
        user = translation_request("fra_Latn", "wol_Latn", SENTENCES[0])
        expected = render_prompt("fra_Latn", "wol_Latn", SENTENCES[0])
        with_system = [{"role": "system", "content": SYSTEM_IDENTITY}, {"role": "user", "content": user}]
        as_parts = [{"role": "user", "content": [{"type": "text", "text": user}]}]  # how transformers serve sends it
        for messages in (with_system, as_parts):
            assert tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == expected
        history = tokenizer.apply_chat_template(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"},
             {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
            add_generation_prompt=True, tokenize=False)
        assert history.startswith("<|start|>system<|message|>Be brief.\nReasoning: low\n\n# Valid channels:")
        assert history.endswith("<|start|>user<|message|>a<|end|><|start|>assistant<|channel|>final<|message|>b<|end|>"
                                "<|start|>user<|message|>c<|end|><|start|>assistant<|channel|>final<|message|>")
    finally:
        tokenizer.chat_template = saved


def test_final_channel():
    raw = ("<|channel|>analysis<|message|>The user wants Wolof.<|end|>"
           "<|start|>assistant<|channel|>final<|message|>Nanga def?<|return|>")
    assert final_channel(raw) == "Nanga def?"
    assert final_channel(" Nanga def? ") == "Nanga def?"  # already parsed by the server
    assert final_channel("Nanga def?<|end|>junk") == "Nanga def?"


def test_servable_folder(tiny_server, base_tokenizer):
    from pathlib import Path

    folder = Path(tiny_server.model)
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    generation = json.loads((folder / "generation_config.json").read_text())
    assert sorted(generation["eos_token_id"]) == sorted(
        base_tokenizer.convert_tokens_to_ids(["<|return|>", "<|end|>", "<|call|>"]))
    assert base_tokenizer.chat_template != HARMONY_CHAT_TEMPLATE  # the caller's tokenizer is untouched


def test_served_answer_is_the_local_final_channel_text(tiny_server, base_tokenizer):
    """Through the official client, the served model answers exactly what langkit's own greedy generation writes
    after ``<|channel|>final<|message|>``: same prompt, same weights, same stop tokens, no special tokens left."""
    from openai import OpenAI

    from langkit.evaluate import translate
    from langkit.models import build_random_model

    expected = translate(build_random_model("tiny"), base_tokenizer, "fra_Latn", "wol_Latn", SENTENCES,
                         max_new_tokens=12, batch_size=1)
    with OpenAI(base_url=tiny_server.base_url, api_key="EMPTY", max_retries=0) as client:
        answers = []
        for text in SENTENCES:
            response = client.chat.completions.create(
                model=tiny_server.model, temperature=0, max_tokens=12,
                messages=[{"role": "system", "content": SYSTEM_IDENTITY},
                          {"role": "user", "content": translation_request("fra_Latn", "wol_Latn", text)}])
            answers.append((response.choices[0].message.content or "").strip())
    assert answers == expected
    assert all(answers) and not any("<|" in a for a in answers)


def test_start_server_failure_shows_the_log(tmp_path):
    (tmp_path / "config.json").write_text("{}")  # no model_type: transformers cannot load it
    with pytest.raises(ServerError, match=r"(?s)exited with code 1 .*model_type"):
        start_server(tmp_path, startup_timeout=120)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        start_server(tmp_path / "missing")


def test_servable_from_run_merges_the_adapter_with_the_extended_tokenizer(extended_tokenizer, tmp_path):
    """A run (extended tokenizer + a LoRA adapter with non-zero weights) becomes a plain transformers folder:
    the merged model's logits equal the adapted model's, the new tokens are in its vocabulary, and its chat
    template renders the prompt langkit trains on."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langkit.config import RunConfig, TrainConfig, save_config
    from langkit.rundir import RunDir
    from langkit.serve import servable_from_run
    from langkit.train import prepare_model

    tokenizer, new_tokens, folder = extended_tokenizer
    run_dir = RunDir(tmp_path / "run")
    cfg = RunConfig(name="serve", languages=["wol_Latn"], train=TrainConfig(model="tiny", lora_r=4, lora_alpha=8))
    run_dir.root.mkdir()
    save_config(cfg, run_dir.config)
    shutil.copytree(folder, run_dir.tokenizer)
    model = prepare_model(cfg.train, tokenizer, new_tokens)
    torch.manual_seed(1)
    with torch.no_grad():  # as if trained: LoRA B starts at zero, which would make the merge trivially right
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    model.save_pretrained(str(run_dir.adapter))

    out = servable_from_run(run_dir.root, tmp_path / "served")
    adapted = model.eval()
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    served_tokenizer = AutoTokenizer.from_pretrained(str(out))
    prompt = render_prompt("fra_Latn", "wol_Latn", "Ñaata la mburu mi jar ?")
    ids = torch.tensor([served_tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    assert ids.max().item() < merged.get_input_embeddings().weight.shape[0]
    assert len(served_tokenizer) == len(tokenizer) > 201_088
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, rtol=1e-4, atol=1e-4)
    messages = [{"role": "user", "content": translation_request("fra_Latn", "wol_Latn", "Ñaata la mburu mi jar ?")}]
    assert served_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == prompt
