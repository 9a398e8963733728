"""gpt-oss models by name, and the resizing of their embeddings for an extended tokenizer.

Names: ``openai/gpt-oss-20b`` and ``openai/gpt-oss-120b`` (or a local folder holding either), loaded with
their MXFP4 experts dequantized to bf16 so that LoRA can train on them; and ``tiny``, a randomly
initialised ``GptOssForCausalLM`` with the real 201,088-id vocabulary, built in code for the demo and
the tests. ``tiny`` is deterministic: the same seed builds the same weights, so an adapter trained on it
can be loaded again onto a fresh copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from langkit.tokenizer import BASE_VOCAB_SIZE, NewToken
from langkit.utils import get_logger

log = get_logger("models")

TINY = "tiny"

# Architecture of the released checkpoints (their config.json), for building them with random weights
# when nothing can be downloaded (benchmarks on a GPU). Shapes: experts [E, H, 2I] and [E, I, H].
ARCHITECTURES: dict[str, dict[str, Any]] = {
    TINY: dict(
        hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
        sliding_window=128, max_position_embeddings=4096,
    ),
    "openai/gpt-oss-20b": dict(
        hidden_size=2880, intermediate_size=2880, num_hidden_layers=24, num_attention_heads=64,
        num_key_value_heads=8, head_dim=64, num_local_experts=32, num_experts_per_tok=4,
        sliding_window=128, max_position_embeddings=131072,
    ),
    "openai/gpt-oss-120b": dict(
        hidden_size=2880, intermediate_size=2880, num_hidden_layers=36, num_attention_heads=64,
        num_key_value_heads=8, head_dim=64, num_local_experts=128, num_experts_per_tok=4,
        sliding_window=128, max_position_embeddings=131072,
    ),
}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def gpt_oss_config(name: str = TINY, vocab_size: int = BASE_VOCAB_SIZE) -> Any:
    """A ``GptOssConfig`` with the architecture of ``name`` (``tiny``, or a gpt-oss Hub id)."""
    from transformers import GptOssConfig

    if name not in ARCHITECTURES:
        raise ValueError(f"no built-in architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return GptOssConfig(
        vocab_size=vocab_size, tie_word_embeddings=False, pad_token_id=199999, bos_token_id=199998,
        eos_token_id=200002, **ARCHITECTURES[name],
    )


def build_random_model(name: str = TINY, seed: int = 0, dtype: str = "float32",
                       device: str | torch.device | None = None) -> Any:
    """The real ``GptOssForCausalLM`` architecture with random weights (no download). With ``device``, the
    weights are created there directly in ``dtype`` (gpt-oss-20b built in float32 on the host first would
    take 84 GB); without it, built in float32 on the CPU and cast (the tiny model's seeded weights)."""
    from transformers import GptOssForCausalLM

    torch.manual_seed(seed)
    if device is not None:
        with torch.device(device):
            model: Any = GptOssForCausalLM._from_config(gpt_oss_config(name), dtype=DTYPES[dtype])
        model.config.use_cache = False
        return model
    model = GptOssForCausalLM(gpt_oss_config(name))
    model = model.to(DTYPES[dtype])
    model.config.use_cache = False
    return model


def load_base_model(name: str, dtype: str = "float32", seed: int = 0) -> Any:
    """A gpt-oss model by name: ``tiny`` (built, seeded), a local folder, or a Hub id (MXFP4 dequantized)."""
    if name == TINY:
        return build_random_model(TINY, seed=seed, dtype=dtype)
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype]}
    config = AutoConfig.from_pretrained(name)
    quant = getattr(config, "quantization_config", None)
    quant_method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    if quant_method == "mxfp4":
        # MXFP4 is an inference format: dequantize the experts to bf16 so LoRA can train against them.
        from transformers.utils.quantization_config import Mxfp4Config

        kwargs["quantization_config"] = Mxfp4Config(dequantize=True)
    log.info("loading %s (%s)%s", name, dtype, " with MXFP4 experts dequantized" if "quantization_config" in kwargs else "")
    return AutoModelForCausalLM.from_pretrained(name, **kwargs)


def is_local_model(name: str) -> bool:
    return name == TINY or Path(name).is_dir()


def resize_for_new_tokens(model: Any, vocab_size: int, new_tokens: Sequence[NewToken]) -> list[int]:
    """Grow the input embeddings and lm_head to ``vocab_size`` rows and initialise each new token's rows
    (both matrices: gpt-oss does not tie them) with the mean of the rows of the base tokens it merges.
    Returns the new token ids."""
    old_size = model.get_input_embeddings().weight.shape[0]
    if vocab_size < old_size:
        raise ValueError(f"tokenizer has {vocab_size} ids but the model already has {old_size} rows")
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    new_ids = [t.id for t in new_tokens]
    if any(not old_size <= i < vocab_size for i in new_ids):
        raise ValueError(f"new token ids must lie in [{old_size}, {vocab_size}); is new_tokens.json from this tokenizer?")
    with torch.no_grad():
        for matrix in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            for token in new_tokens:
                matrix[token.id] = matrix[token.base_ids].mean(dim=0)  # [H]: mean of its base sub-token rows
    return new_ids
