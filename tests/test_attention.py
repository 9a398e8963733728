"""langkit_sink attention against transformers' own eager gpt-oss attention and masks (float32, CPU)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import GptOssConfig, GptOssForCausalLM
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

from langkit import attention
from langkit.attention import (
    LANGKIT_SINK,
    packed_eager_masks,
    segment_ids,
    set_attention,
    sink_attention_forward,
)

HEADS, DIM, WINDOW = 4, 16, 8
ATOL = 2e-6


class _Sinks(torch.nn.Module):
    """What eager_attention_forward reads from a GptOssAttention module."""

    def __init__(self, heads: int, kv_heads: int) -> None:
        super().__init__()
        self.sinks = torch.nn.Parameter(torch.randn(heads))
        self.num_key_value_groups = heads // kv_heads


def _eager_mask(window: int | None, length: int, padding: torch.Tensor | None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """transformers' own 4-D eager mask for a gpt-oss layer (sliding when ``window``)."""
    config = GptOssConfig(num_attention_heads=HEADS, num_key_value_heads=2, head_dim=DIM, sliding_window=WINDOW)
    config._attn_implementation = "eager"
    build = create_causal_mask if window is None else create_sliding_window_causal_mask
    batch = padding.shape[0] if padding is not None else position_ids.shape[0]  # type: ignore[union-attr]
    return build(config=config, inputs_embeds=torch.zeros(batch, length, 1), attention_mask=padding, cache=None,
                 position_ids=position_ids)


def _grads(fn: Any, tensors: list[torch.Tensor], weight: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    for t in tensors:
        t.grad = None
    out = fn()
    (out * weight).sum().backward()
    return out.detach(), [t.grad.clone() for t in tensors]  # type: ignore[union-attr]


def _compare(eager_mask: torch.Tensor, kwargs: dict[str, Any], kv_heads: int, length: int, batch: int = 2,
             rows: slice = slice(None)) -> None:
    torch.manual_seed(0)
    module = _Sinks(HEADS, kv_heads)
    q = torch.randn(batch, HEADS, length, DIM, requires_grad=True)
    k = torch.randn(batch, kv_heads, length, DIM, requires_grad=True)
    v = torch.randn(batch, kv_heads, length, DIM, requires_grad=True)
    weight = torch.randn(batch, length, HEADS, DIM)[:, rows]
    tensors = [q, k, v, module.sinks]

    def eager() -> torch.Tensor:
        return eager_attention_forward(module, q, k, v, eager_mask, scaling=DIM**-0.5)[0][:, rows]

    def ours() -> torch.Tensor:
        return sink_attention_forward(module, q[:, :, rows], k, v, scaling=DIM**-0.5, **kwargs)[0]

    expected, expected_grads = _grads(eager, tensors, weight)
    got, got_grads = _grads(ours, tensors, weight)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-5)
    for name, g, e in zip(("q", "k", "v", "sinks"), got_grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, atol=ATOL, rtol=1e-5, msg=lambda m, name=name: f"grad of {name}: {m}")


@pytest.fixture(params=[1 << 25, 64], ids=["one-block", "many-blocks"])
def block_elements(request, monkeypatch) -> int:
    """One query block per call, or blocks of 16 rows (the minimum) so that every block boundary,
    sliding-window key range and causal edge is crossed."""
    monkeypatch.setattr(attention, "SCORE_BLOCK_ELEMENTS", request.param)
    return int(request.param)


@pytest.mark.parametrize("window", [None, WINDOW], ids=["full", "sliding"])
@pytest.mark.parametrize("kv_heads", [2, 4], ids=["gqa", "mha"])
@pytest.mark.parametrize("padding", ["none", "right", "left"])
def test_equals_eager_forward_and_backward(window, kv_heads, padding, block_elements):
    length = 37
    mask = torch.ones(2, length, dtype=torch.long)
    if padding == "right":
        mask[1, 29:] = 0
    elif padding == "left":
        mask[0, :5] = 0  # its first query rows see no key at all: eager gives them 0, so must we
    _compare(_eager_mask(window, length, mask), {"attention_mask": mask, "sliding_window": window}, kv_heads, length)


@pytest.mark.parametrize("window", [None, WINDOW], ids=["full", "sliding"])
def test_packed_rows_equal_eager_with_transformers_packed_mask(window, block_elements):
    # Restarting position ids: transformers' mask builder turns them into a block-diagonal mask (when
    # given them; gpt-oss's model does not pass them, see packed_eager_masks).
    position_ids = torch.tensor([list(range(12)) + list(range(20)) + list(range(9)),
                                 list(range(30)) + list(range(11))])
    length = position_ids.shape[1]
    expected_mask = _eager_mask(window, length, None, position_ids)
    _compare(expected_mask, {"attention_mask": None, "sliding_window": window, "position_ids": position_ids}, 2, length)
    # Our own eager masks for packed rows are the same as transformers'.
    ours = packed_eager_masks(position_ids, None, WINDOW, torch.float32)
    key = "full_attention" if window is None else "sliding_attention"
    assert torch.equal(ours[key] == 0, expected_mask == 0)


def test_kv_cache_queries_are_the_last_keys(block_elements):
    # With a cache, 5 new queries see 37 keys: the same as the last 5 rows of the full computation.
    length = 37
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, :3] = 0
    for window in (None, WINDOW):
        _compare(_eager_mask(window, length, mask), {"attention_mask": mask, "sliding_window": window}, 2, length,
                 rows=slice(length - 5, None))


def test_segment_ids():
    assert segment_ids(torch.arange(6)[None]) is None
    ids = segment_ids(torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]]))
    assert ids is not None and ids.tolist() == [[0, 0, 0, 1, 1, 2], [0, 0, 0, 0, 0, 0]]


def test_no_dropout():
    module = _Sinks(HEADS, 2)
    q = torch.randn(1, HEADS, 4, DIM)
    k = torch.randn(1, 2, 4, DIM)
    with pytest.raises(ValueError, match="no dropout"):
        sink_attention_forward(module, q, k, k, None, scaling=1.0, dropout=0.1)


def _small_model(vocab: int = 512) -> Any:
    """A 2-layer GptOss (layer 0 sliding with window 8, layer 1 full) with random sinks."""
    torch.manual_seed(0)
    config = GptOssConfig(vocab_size=vocab, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=HEADS, num_key_value_heads=2, head_dim=DIM, num_local_experts=4,
                          num_experts_per_tok=2, sliding_window=WINDOW, tie_word_embeddings=False, pad_token_id=0)
    model = GptOssForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.sinks.normal_(0, 1.0)  # sinks that matter, not the init's 0.02
    return model


def test_whole_model_equal_to_eager(block_elements):
    model = _small_model()
    assert model.config.layer_types == ["sliding_attention", "full_attention"]
    torch.manual_seed(1)
    input_ids = torch.randint(1, 512, (2, 40))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 31:] = 0
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    results = {}
    for name in ("eager", LANGKIT_SINK):
        set_attention(model, name)
        assert model.config._attn_implementation == name
        model.zero_grad()
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        out.loss.backward()
        results[name] = (out.logits.detach(), out.loss.detach(),
                         {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    (logits_e, loss_e, grads_e), (logits_s, loss_s, grads_s) = results["eager"], results[LANGKIT_SINK]
    torch.testing.assert_close(logits_s, logits_e, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss_s, loss_e, atol=1e-6, rtol=1e-6)
    assert grads_s.keys() == grads_e.keys() and any("sinks" in n for n in grads_e)
    for n in grads_e:
        torch.testing.assert_close(grads_s[n], grads_e[n], atol=1e-5, rtol=1e-4, msg=lambda m, n=n: f"{n}: {m}")


def test_memory_is_not_quadratic(monkeypatch):
    # The largest score block is bounded by SCORE_BLOCK_ELEMENTS, whatever the length: record the blocks
    # of a 2,048-token causal pass with a budget far below 2,048².
    monkeypatch.setattr(attention, "SCORE_BLOCK_ELEMENTS", 1 << 16)
    seen: list[int] = []
    real = attention._masked_scores

    def spy(*args: Any) -> Any:
        q_rows, scores = real(*args)
        seen.append(scores.numel())
        return q_rows, scores

    monkeypatch.setattr(attention, "_masked_scores", spy)
    length = 2048
    q = torch.randn(1, HEADS, length, DIM)
    k = torch.randn(1, 2, length, DIM)
    attention.sink_attention(q, k, k, torch.zeros(HEADS), DIM**-0.5)
    assert len(seen) > 10 and max(seen) <= (1 << 16) + HEADS * 16 * length  # a 16-row block at worst
    assert max(seen) < HEADS * length * length // 16


def test_bfloat16_close_to_float32_reference():
    # The GPU path trains in bf16: scores and probabilities are still accumulated in float32 here.
    torch.manual_seed(0)
    module = _Sinks(HEADS, 2)
    q, k, v = torch.randn(1, HEADS, 64, DIM), torch.randn(1, 2, 64, DIM), torch.randn(1, 2, 64, DIM)
    expected = sink_attention_forward(module, q, k, v, None, scaling=DIM**-0.5, sliding_window=WINDOW)[0]
    got = sink_attention_forward(module, q.bfloat16(), k.bfloat16(), v.bfloat16(), None, scaling=DIM**-0.5,
                                 sliding_window=WINDOW)[0]
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=3e-2, rtol=3e-2)
