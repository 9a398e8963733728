"""The model of the train stage: the base resized for the extended tokenizer, wrapped by PEFT; the checks
that fail before any compute; loading a trained run back; the merged export."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from langkit.attention import set_attention
from langkit.config import RunConfig, TrainConfig
from langkit.models import TINY, gpt_oss_config, load_base_model, resize_for_new_tokens
from langkit.rundir import RunDir
from langkit.tokenizer import NewToken, load_new_tokens
from langkit.utils import get_logger, replace_dir, temp_dir

log = get_logger("train")

ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
# Keep this order: the adapter's saved keys depend on it (see ../shared/FACTS.md).
EXPERT_PARAMETERS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


def tokenizer_size(tokenizer: Any) -> int:
    """Rows a model needs for this tokenizer: one past its largest id (ids may have gaps)."""
    return max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)


def check_vocabulary(tokenizer_ids: int, model_rows: int, new_tokens: Sequence[NewToken]) -> int:
    """Check that a tokenizer of ``tokenizer_ids`` ids fits a base model with ``model_rows`` embedding
    rows plus ``new_tokens`` (ids ``model_rows`` and up). Returns the vocabulary size to resize to."""
    ids = sorted(t.id for t in new_tokens)
    target = model_rows + len(ids)
    if ids and ids != list(range(model_rows, target)):
        raise ValueError(
            f"vocabulary mismatch: new_tokens.json gives ids {ids[0]}..{ids[-1]}, but the base model has "
            f"{model_rows} rows so new ids must be {model_rows}..{target - 1}; was the tokenizer extended "
            "from another base than train.model?"
        )
    if tokenizer_ids > target:
        raise ValueError(
            f"vocabulary mismatch: the tokenizer has {tokenizer_ids} ids but the base model has {model_rows} "
            f"rows and new_tokens.json adds {len(ids)}; ids {target}..{tokenizer_ids - 1} would have no "
            "embedding (is new_tokens.json from this tokenizer, and the tokenizer from this base model?)"
        )
    if ids and tokenizer_ids != target:
        raise ValueError(
            f"vocabulary mismatch: new_tokens.json adds ids up to {target - 1} but the tokenizer has only "
            f"{tokenizer_ids} ids (is new_tokens.json from this tokenizer?)"
        )
    return target


def base_model_config(name: str) -> Any:
    """The config of base model ``name`` (no weights loaded)."""
    if name == TINY:
        return gpt_oss_config(TINY)
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(name)


def check_max_length(train: TrainConfig, config: Any) -> None:
    """``ValueError`` when ``train.max_length`` is beyond the positions the base model was built for."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and train.max_length > int(limit):
        raise ValueError(f"train.max_length={train.max_length} is beyond {train.model}'s max_position_embeddings="
                         f"{limit}: lower train.max_length")


def _resized_base(train: TrainConfig, tokenizer: Any, new_tokens: Sequence[NewToken]) -> tuple[Any, list[int]]:
    base = load_base_model(train.model, train.dtype, seed=train.seed)
    base.config.use_cache = False
    rows = base.get_input_embeddings().weight.shape[0]
    vocab_size = check_vocabulary(tokenizer_size(tokenizer), rows, new_tokens)
    new_ids = resize_for_new_tokens(base, vocab_size, new_tokens) if new_tokens else []
    return base, new_ids


def expert_lora(train: TrainConfig) -> tuple[int, float]:
    """(rank, alpha) of the expert LoRA: ``train.lora_expert_r`` (default ``lora_r``) and
    ``train.lora_expert_alpha`` (default: the attention's ratio alpha / r times the expert rank, so both
    updates get the same scale)."""
    rank = train.lora_expert_r or train.lora_r
    alpha = train.lora_expert_alpha if train.lora_expert_alpha is not None else train.lora_alpha * rank / train.lora_r
    return rank, alpha


def lora_config(train: TrainConfig, new_ids: Sequence[int]) -> Any:
    """The PEFT config of a run: LoRA on attention (and experts), trainable rows for the new tokens."""
    from peft import LoraConfig

    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    if train.lora_experts:
        # Each of the E experts gets its own rank-r pair (E x the attention's budget per layer at equal r), so
        # the experts may get a smaller rank. The keys match PEFT's names for target_parameters
        # (model.layers.N.mlp.experts.gate_up_proj); q/k/v/o never end that way.
        rank, alpha = expert_lora(train)
        if rank != train.lora_r or alpha != train.lora_alpha:
            rank_pattern = {name: rank for name in EXPERT_PARAMETERS}
            alpha_pattern = {name: alpha for name in EXPERT_PARAMETERS}
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=train.lora_r,
        lora_alpha=train.lora_alpha,
        lora_dropout=0.0,  # required by target_parameters (expert LoRA)
        target_modules=list(ATTENTION_MODULES),
        target_parameters=list(EXPERT_PARAMETERS) if train.lora_experts else None,
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        # Dict form: gpt-oss's lm_head is untied from embed_tokens and needs its own trainable rows.
        trainable_token_indices=(
            {"embed_tokens": list(new_ids), "lm_head": list(new_ids)}
            if train.train_new_embeddings and new_ids else None
        ),
    )


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def prepare_model(train: TrainConfig, tokenizer: Any, new_tokens: Sequence[NewToken]) -> Any:
    """The base model resized for ``tokenizer`` and wrapped for training (a ``PeftModel``).

    Raises ``ValueError`` when the tokenizer does not fit the base model or nothing would be trained."""
    from peft import get_peft_model

    base, new_ids = _resized_base(train, tokenizer, new_tokens)
    set_attention(base, train.attention)  # training only: evaluation generates with transformers' eager
    if train.gradient_checkpointing:
        # Non-reentrant: PEFT's frozen embeddings give the first layer no input that requires grad.
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(train.seed)  # LoRA A initialisation
    try:
        with warnings.catch_warnings():
            # PEFT 0.21 checks rank_pattern/alpha_pattern keys against target_modules only and warns that the
            # expert keys matched nothing, then applies them to the target_parameters all the same (tested).
            warnings.filterwarnings("ignore", message=r"The following (rank|alpha)_pattern keys did not match")
            model = get_peft_model(base, lora_config(train, new_ids))
    except ValueError as err:  # PEFT: "Target modules ... not found in the base model", and the like
        raise ValueError(f"{train.model}: the LoRA config (attention modules {ATTENTION_MODULES}, train.lora_experts="
                         f"{train.lora_experts}) targets no parameter of this model: {err}") from None
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise ValueError(f"{train.model}: the LoRA config matched no parameter, nothing to train")
    log.info("%s: %d trainable parameters of %d (%.3f%%); %d new token rows", train.model, trainable, total,
             100 * trainable / total, len(new_ids) if train.train_new_embeddings else 0)
    return model


def load_adapted_model(run_dir: RunDir, cfg: RunConfig, device: str | torch.device | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) of a trained run: the extended tokenizer, the base resized for it, and the
    adapter from ``run_dir.adapter``, in eval mode (on ``device`` when given, else where it loaded)."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(run_dir.require(run_dir.tokenizer, "tokenizer")))
    new_tokens = load_new_tokens(run_dir.require(run_dir.new_tokens, "tokenizer"))
    base, _ = _resized_base(cfg.train, tokenizer, new_tokens)
    model = PeftModel.from_pretrained(base, str(run_dir.require(run_dir.adapter, "train")))
    if device is not None:
        model.to(device)
    model.eval()
    return model, tokenizer


def export_merged(run_dir: RunDir, cfg: RunConfig) -> Path:
    """Write ``run_dir.merged``: the trained adapter merged into the (resized) base with
    ``merge_and_unload`` and saved as a plain transformers model (safetensors), with the tokenizer next to
    it, atomically (temp folder, then renamed). vLLM does not serve LoRA on gpt-oss's experts; this folder
    it serves as any gpt-oss checkpoint. Returns the folder.

    The weights are saved in ``train.dtype`` (a real checkpoint's MXFP4 experts stay dequantized: transformers
    drops the quantization config when it dequantizes on load)."""
    model, tokenizer = load_adapted_model(run_dir, cfg)
    merged = model.merge_and_unload()
    merged.config.use_cache = True  # training turned the cache off; serving wants it
    dest = run_dir.merged
    tmp = temp_dir(dest)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    replace_dir(tmp, dest)
    log.info("merged model (%d-token vocabulary) written to %s", merged.get_input_embeddings().weight.shape[0], dest)
    return dest
