"""The chunked loss equals transformers' loss, gradients included, on the PEFT-wrapped tiny gpt-oss
(real 201,088-token vocabulary, new-token rows trainable in lm_head through PEFT's wrapper)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from peft import get_peft_model

from langkit.config import TrainConfig
from langkit.harmony import IGNORE_INDEX
from langkit.loss import causal_lm_loss, chunked_cross_entropy
from langkit.models import build_random_model, resize_for_new_tokens
from langkit.tokenizer import BASE_VOCAB_SIZE, NewToken
from langkit.train import lora_config

N_NEW = 6


@pytest.fixture(scope="module")
def peft_model() -> tuple[Any, list[int]]:
    """The tiny gpt-oss with 6 new tokens, LoRA on attention and experts, trainable new-token rows; LoRA B
    made non-zero so that every LoRA parameter has a gradient."""
    base = build_random_model("tiny")
    new = [NewToken(BASE_VOCAB_SIZE + i, f"t{i}", f"t{i}", ("a", "b"), [100 + i, 2000 + i], 1) for i in range(N_NEW)]
    new_ids = resize_for_new_tokens(base, BASE_VOCAB_SIZE + N_NEW, new)
    torch.manual_seed(0)
    model = get_peft_model(base, lora_config(TrainConfig(lora_r=4, lora_alpha=8), new_ids))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return model, new_ids


def _trainable_grads(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def test_chunked_cross_entropy_equals_plain_with_peft_lm_head(peft_model):
    model, new_ids = peft_model
    head = model.get_output_embeddings()
    assert type(head).__name__ == "TrainableTokensWrapper"  # the new rows live in PEFT's wrapper
    torch.manual_seed(1)
    hidden = torch.randn(70, 64, requires_grad=True)
    labels = torch.randint(0, BASE_VOCAB_SIZE, (70,))
    labels[::4] = torch.tensor(new_ids * 3)[: labels[::4].numel()]  # new tokens as targets: their rows get gradient
    labels[5:20] = IGNORE_INDEX
    delta = [p for n, p in head.named_parameters() if p.requires_grad]
    assert len(delta) == 1

    model.zero_grad()
    hidden.grad = None
    expected = F.cross_entropy(head(hidden).float(), labels, ignore_index=IGNORE_INDEX)
    expected.backward()
    expected_grads = (hidden.grad.clone(), delta[0].grad.clone())  # type: ignore[union-attr]
    assert expected_grads[1].abs().sum() > 0

    for chunk in (16, 1024):  # several chunks with a ragged last one, and a single chunk
        model.zero_grad()
        hidden.grad = None
        got = chunked_cross_entropy(hidden, labels, head, chunk_size=chunk)
        got.backward()
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(hidden.grad, expected_grads[0], atol=1e-7, rtol=1e-4)
        torch.testing.assert_close(delta[0].grad, expected_grads[1], atol=1e-7, rtol=1e-4)

    with torch.no_grad():  # evaluation: no gradient work, same value
        torch.testing.assert_close(chunked_cross_entropy(hidden, labels, head, 16), expected.detach())
    assert torch.isnan(chunked_cross_entropy(hidden, torch.full_like(labels, IGNORE_INDEX), head, 16))


def test_causal_lm_loss_equals_model_loss_and_gradients(peft_model):
    model, new_ids = peft_model
    torch.manual_seed(2)
    input_ids = torch.randint(0, BASE_VOCAB_SIZE, (2, 48))
    input_ids[:, 7] = new_ids[0]
    input_ids[:, 30] = new_ids[1]
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 36:] = 0
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    labels[:, :10] = IGNORE_INDEX  # a prompt without loss
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    model.zero_grad()
    expected = model(**batch).loss
    expected.backward()
    expected_grads = _trainable_grads(model)
    model.zero_grad()
    got = causal_lm_loss(model, batch, chunk_size=32)
    got.backward()
    got_grads = _trainable_grads(model)

    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    assert got_grads.keys() == expected_grads.keys()
    kinds = {"lora_A", "lora_B", "experts", "lm_head.token_adapter", "embed_tokens.token_adapter"}
    assert all(any(kind in name for name in got_grads) for kind in kinds)
    for name in expected_grads:
        torch.testing.assert_close(got_grads[name], expected_grads[name], atol=1e-7, rtol=1e-4,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_gradient_checkpointing_with_langkit_path_gives_same_gradients(peft_model):
    from langkit.attention import set_attention

    model, _ = peft_model
    base = model.get_base_model()
    torch.manual_seed(3)
    input_ids = torch.randint(0, BASE_VOCAB_SIZE, (1, 40))
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids}
    set_attention(base, "langkit_sink")
    model.train()
    try:
        results = []
        for checkpointing in (False, True):
            if checkpointing:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.zero_grad()
            loss = causal_lm_loss(model, batch, chunk_size=16)
            loss.backward()
            results.append((loss.detach(), _trainable_grads(model)))
    finally:
        base.gradient_checkpointing_disable()
        set_attention(base, "eager")
        model.eval()
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a)
    assert grads_b.keys() == grads_a.keys() and any("lora_A" in n for n in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], atol=1e-7, rtol=1e-5)
