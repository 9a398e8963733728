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
