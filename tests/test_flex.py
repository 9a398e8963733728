"""flex attention (FlexAttention + exact sinks) against transformers' own eager gpt-oss attention and masks.

torch 2.13 runs FlexAttention's forward pass on CPU (its unfused reference) but refuses its backward pass
there at a device check. The forward tests below run the real thing; the gradient tests run on CUDA
when there is one, and on CPU through ``cpu_backward``, which lifts only that device check so that torch's
own unfused backward (the reference its fused kernels are tested against) runs
(``langkit.flex.cpu_reference_backward``): it checks our sink algebra, masks and GQA layout through
FlexAttention's real autograd, LSE gradient included.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.attention.flex_attention as torch_flex
from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

from langkit import flex
from langkit.attention import FLEX, packed_eager_masks, segment_ids, set_attention
from langkit.config import ConfigError, TrainConfig
from langkit.flex import block_mask_from, flex_attention_forward, rule_mask_mod
from tests.test_attention import DIM, HEADS, WINDOW, _eager_mask, _grads, _Sinks, _small_model

CUDA = torch.cuda.is_available()
NO_CPU_BACKWARD = ("FlexAttention has no backward pass on CPU in torch 2.13 (NotImplementedError: 'FlexAttention "
                   "does not support backward on CPU'); scripts/gpu_check.py runs this check on a GPU")

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
original_check = torch_flex._validate_device


@pytest.fixture
def cpu_backward():
    """torch's unfused FlexAttention with its backward pass allowed on CPU (langkit.flex.cpu_reference_backward)."""
    with flex.cpu_reference_backward():
        yield
    assert torch_flex._validate_device is original_check


@pytest.fixture(autouse=True)
def fresh_cache():
    flex._cache.clear()
    yield
    flex._cache.clear()


def _case(kind: str, length: int = 37) -> tuple[torch.Tensor, dict[str, Any], slice]:
    """(transformers' eager 4-D mask, our kwargs, query rows) of one mask kind."""
    window = WINDOW if kind.endswith("sliding") else None
    rows = slice(None)
    if kind.startswith("packed"):
        position_ids = torch.tensor([list(range(12)) + list(range(20)) + list(range(5)),
                                     list(range(30)) + list(range(7))])
        return _eager_mask(window, length, None, position_ids), dict(position_ids=position_ids,
                                                                     sliding_window=window), rows
    mask = torch.ones(2, length, dtype=torch.long)
    if kind.startswith("padded"):
        mask[0, :5] = 0  # left padding: its first query rows see no key at all, so their output is 0
        mask[1, 29:] = 0  # right padding
    if kind.startswith("cache"):
        mask[1, :3] = 0
        rows = slice(length - 5, None)  # 5 new queries after 32 cached keys
    eager_mask = _eager_mask(window, length, mask)
    if kind.startswith("prepared"):  # a 4-D mask passed as it is: additive float, or bool
        return eager_mask, dict(attention_mask=eager_mask if kind.endswith("float") else eager_mask == 0), rows
    return eager_mask, dict(attention_mask=mask, sliding_window=window), rows


KINDS = ["causal-full", "causal-sliding", "padded-full", "padded-sliding", "packed-full", "packed-sliding",
         "cache-full", "cache-sliding", "prepared-float", "prepared-bool"]


def _compare(kind: str, kv_heads: int, device: str, grads: bool, atol: float = 2e-6, rtol: float = 1e-5,
             length: int = 37) -> None:
    torch.manual_seed(0)
    eager_mask, kwargs, rows = _case(kind, length)
    module = _Sinks(HEADS, kv_heads).to(device)
    with torch.no_grad():
        module.sinks.normal_(0, 2.0)  # sinks that take a real share of each row
    q = torch.randn(2, HEADS, length, DIM, device=device, requires_grad=grads)
    k = torch.randn(2, kv_heads, length, DIM, device=device, requires_grad=grads)
    v = torch.randn(2, kv_heads, length, DIM, device=device, requires_grad=grads)
    weight = torch.randn(2, length, HEADS, DIM, device=device)[:, rows]
    kwargs = {n: t.to(device) if isinstance(t, torch.Tensor) else t for n, t in kwargs.items()}
    eager_mask = eager_mask.to(device)

    def eager() -> torch.Tensor:
        return eager_attention_forward(module, q, k, v, eager_mask, scaling=DIM**-0.5)[0][:, rows]

    def ours() -> torch.Tensor:
        return flex_attention_forward(module, q[:, :, rows], k, v, kwargs.get("attention_mask"), scaling=DIM**-0.5,
                                      sliding_window=kwargs.get("sliding_window"),
                                      position_ids=kwargs.get("position_ids"))[0]

    if not grads:
        with torch.no_grad():
            torch.testing.assert_close(ours(), eager(), atol=atol, rtol=rtol)
        return
    tensors = [q, k, v, module.sinks]
    expected, expected_grads = _grads(eager, tensors, weight)
    got, got_grads = _grads(ours, tensors, weight)
    torch.testing.assert_close(got, expected, atol=atol, rtol=rtol)
    for name, g, e in zip(("q", "k", "v", "sinks"), got_grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, atol=atol, rtol=rtol, msg=lambda m, name=name: f"grad of {name}: {m}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kv_heads", [2, 4], ids=["gqa", "mha"])
def test_forward_equals_eager(kind, kv_heads):
    # The real FlexAttention, no patch: its forward pass runs on CPU.
    _compare(kind, kv_heads, "cpu", grads=False)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kv_heads", [2, 4], ids=["gqa", "mha"])
def test_gradients_equal_eager_through_torch_reference(kind, kv_heads, cpu_backward):
    _compare(kind, kv_heads, "cpu", grads=True)


@pytest.mark.skipif(not CUDA, reason=NO_CPU_BACKWARD)
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_equal_eager_fused_kernel(kind):
    # Compiled Triton kernels (float32 dots may run as TF32): a looser tolerance than the CPU reference.
    _compare(kind, 2, "cuda", grads=True, atol=2e-3, rtol=2e-3, length=300)


def test_cpu_training_says_what_to_use():
    module = _Sinks(HEADS, 2)
    q = torch.randn(1, HEADS, 8, DIM, requires_grad=True)
    k = torch.randn(1, 2, 8, DIM)
    with pytest.raises(NotImplementedError, match="use langkit_sink"):
        flex_attention_forward(module, q, k, k, None, scaling=1.0)


def test_no_dropout():
    module = _Sinks(HEADS, 2)
    q, k = torch.randn(1, HEADS, 4, DIM), torch.randn(1, 2, 4, DIM)
    with pytest.raises(ValueError, match="no dropout"):
        flex_attention_forward(module, q, k, k, None, scaling=1.0, dropout=0.1)


@pytest.mark.parametrize("chunk", [1 << 26, 1], ids=["one-chunk", "row-tile-chunks"])
def test_block_mask_matches_torch_create_block_mask(chunk, monkeypatch):
    # Ours is built from chunks of query rows; torch's from the whole [L, L] mask. Same tiles, full and partial.
    monkeypatch.setattr(flex, "MASK_CHUNK_ELEMENTS", chunk)
    length, window = 700, 128
    position_ids = torch.cat([torch.arange(300), torch.arange(250), torch.arange(150)])[None].expand(2, -1)
    padding = torch.ones(2, length, dtype=torch.bool)
    padding[1, 650:] = False
    segments = torch.zeros(2, 1024, dtype=torch.long)
    segments[:, :length] = segment_ids(position_ids)  # three packed examples
    valid = torch.zeros(2, 1024, dtype=torch.bool)
    valid[:, :length] = padding
    for limit in (window, length + 200):
        mask_mod = rule_mask_mod(torch.tensor(0), torch.tensor(limit), segments, valid)
        ours = block_mask_from(mask_mod, 2, 1, length, length, torch.device("cpu"))
        theirs = torch_flex.create_block_mask(mask_mod, 2, 1, length, length, device="cpu")
        assert torch.equal(ours.to_dense(), theirs.to_dense())
        full = ours.full_kv_num_blocks
        assert full is not None and theirs.full_kv_num_blocks is not None
        assert torch.equal(full, theirs.full_kv_num_blocks)
        assert torch.equal(ours.kv_num_blocks, theirs.kv_num_blocks)
    # The sliding layer visits at most 2 key tiles per query tile (window 128), a tenth of the causal 1 + 6.
    sliding = block_mask_from(rule_mask_mod(torch.tensor(0), torch.tensor(window), segments, valid), 2, 1, length,
                              length, torch.device("cpu"))
    assert int((sliding.kv_num_blocks + sliding.full_kv_num_blocks).max()) <= 2


def test_block_masks_are_shared_by_layers_and_rebuilt_when_positions_change():
    position_ids = torch.tensor([list(range(20)) + list(range(20))])
    first = flex._rule_block_mask(1, 40, 40, WINDOW, None, position_ids, torch.device("cpu"))
    assert flex._rule_block_mask(1, 40, 40, WINDOW, None, position_ids, torch.device("cpu")) is first
    assert flex._rule_block_mask(1, 40, 40, None, None, position_ids, torch.device("cpu")) is not first
    position_ids[0, 20:] += 20  # in place: now one example
    rebuilt = flex._rule_block_mask(1, 40, 40, WINDOW, None, position_ids, torch.device("cpu"))
    assert rebuilt is not first
    same_values = position_ids.clone()  # another tensor with the same values: not trusted by identity
    assert flex._rule_block_mask(1, 40, 40, WINDOW, None, same_values, torch.device("cpu")) is not rebuilt


def test_one_block_mask_per_forward_pass(monkeypatch):
    # The layers of a pass get the same 2-D mask object (and position ids): the block mask is built once per
    # layer kind, not once per layer; a new mask object (the next batch) builds it again.
    built = []
    real = flex.block_mask_from
    monkeypatch.setattr(flex, "block_mask_from", lambda *args: built.append(args[3]) or real(*args))
    module = _Sinks(HEADS, 2)
    q, k = torch.randn(2, HEADS, 40, DIM), torch.randn(2, 2, 40, DIM)
    padding = torch.ones(2, 40, dtype=torch.long)
    padding[1, 30:] = 0
    with torch.no_grad():
        for _ in range(3):  # three layers of each kind
            for window in (None, WINDOW):
                flex_attention_forward(module, q, k, k, padding, scaling=1.0, sliding_window=window)
        assert len(built) == 2
        flex_attention_forward(module, q, k, k, padding.clone(), scaling=1.0, sliding_window=WINDOW)
    assert len(built) == 3


def _model_outputs(model: Any, name: str, inputs: dict[str, Any], grads: bool) -> tuple[Any, ...]:
    set_attention(model, name)
    model.zero_grad()
    if not grads:
        with torch.no_grad():
            return (model(**inputs).logits,)
    out = model(**inputs)
    out.loss.backward()
    return out.logits.detach(), out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                                    if p.grad is not None}


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_whole_model_equal_to_eager(packed, cpu_backward):
    model = _small_model()
    assert model.config.layer_types == ["sliding_attention", "full_attention"]
    torch.manual_seed(1)
    input_ids = torch.randint(1, 512, (2, 40))
    if packed:
        position_ids = torch.tensor([list(range(15)) + list(range(25)), list(range(33)) + list(range(7))])
        ours = dict(input_ids=input_ids, position_ids=position_ids, labels=input_ids)
        # Eager gets the same packing as explicit 4-D masks (gpt-oss's own builder ignores position ids).
        masks = packed_eager_masks(position_ids, None, WINDOW, torch.float32)
        eager = dict(ours, attention_mask=masks)
    else:
        attention_mask = torch.ones_like(input_ids)
        attention_mask[1, 31:] = 0
        ours = eager = dict(input_ids=input_ids, attention_mask=attention_mask,
                            labels=input_ids.masked_fill(attention_mask == 0, -100))
    (logits_f,) = _model_outputs(model, FLEX, ours, grads=False)
    (logits_e,) = _model_outputs(model, "eager", eager, grads=False)
    torch.testing.assert_close(logits_f, logits_e, atol=1e-5, rtol=1e-5)
    logits_f, loss_f, grads_f = _model_outputs(model, FLEX, ours, grads=True)
    logits_e, loss_e, grads_e = _model_outputs(model, "eager", eager, grads=True)
    torch.testing.assert_close(loss_f, loss_e, atol=1e-6, rtol=1e-6)
    assert grads_f.keys() == grads_e.keys() and any("sinks" in n for n in grads_e)
    for n in grads_e:
        torch.testing.assert_close(grads_f[n], grads_e[n], atol=1e-5, rtol=1e-4, msg=lambda m, n=n: f"{n}: {m}")


def test_config_accepts_flex():
    TrainConfig(attention="flex").check("train")
    with pytest.raises(ConfigError, match="eager, langkit_sink or flex"):
        TrainConfig(attention="flash").check("train")


def test_bfloat16_close_to_float32_reference():
    # The GPU path trains in bf16; the LSE and the sink's share stay float32.
    torch.manual_seed(0)
    module = _Sinks(HEADS, 2)
    q, k, v = torch.randn(1, HEADS, 64, DIM), torch.randn(1, 2, 64, DIM), torch.randn(1, 2, 64, DIM)
    expected = flex_attention_forward(module, q, k, v, None, scaling=DIM**-0.5, sliding_window=WINDOW)[0]
    got = flex_attention_forward(module.bfloat16(), q.bfloat16(), k.bfloat16(), v.bfloat16(), None, scaling=DIM**-0.5,
                                 sliding_window=WINDOW)[0]
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.detach(), atol=3e-2, rtol=3e-2)
