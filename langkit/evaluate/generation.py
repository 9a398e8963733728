"""Local generation: greedy translations with ``model.generate``, in gpt-oss's harmony format (or, for a
model whose tokenizer has no harmony tokens, in its own chat template)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langkit.harmony import STOP_TOKENS, SYSTEM_MESSAGE, render_prompt, translation_request
from langkit.utils import get_logger, progress

log = get_logger("evaluate")

PROMPT_FORMATS = ("harmony", "chat")
"""harmony: gpt-oss's own format (:func:`langkit.harmony.render_prompt`, the one training uses); chat: the
tokenizer's chat template with the same request, for other causal LMs."""


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Ids of ``<|return|>`` and ``<|end|>``: a harmony answer ends at either."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS]
    unk = getattr(tokenizer, "unk_token_id", None)
    if any(i is None or i == unk for i in ids):
        raise ValueError(f"tokenizer does not know the harmony stop tokens {STOP_TOKENS}")
    return [int(i) for i in ids]


def decode_answer(tokenizer: Any, new_ids: Sequence[int], stop_ids: Sequence[int]) -> str:
    """The text of generated ids up to (not including) the first stop id; special tokens skipped."""
    stops = set(stop_ids)
    end = next((i for i, t in enumerate(new_ids) if t in stops), len(new_ids))
    return str(tokenizer.decode(list(new_ids[:end]), skip_special_tokens=True)).strip()


def prompt_format(tokenizer: Any) -> str:
    """``harmony`` when the tokenizer knows gpt-oss's stop tokens, else ``chat`` (it needs a chat template)."""
    try:
        stop_token_ids(tokenizer)
        return "harmony"
    except ValueError:
        if getattr(tokenizer, "chat_template", None):
            return "chat"
    raise ValueError("the tokenizer has neither gpt-oss's harmony tokens nor a chat template: "
                     "langkit cannot prompt this model for a translation")


def _chat_prompt(tokenizer: Any, source_language: str, target_language: str, text: str) -> str:
    messages = [{"role": "system", "content": SYSTEM_MESSAGE.split("\n")[0]},
                {"role": "user", "content": translation_request(source_language, target_language, text)}]
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def translate(
    model: Any,
    tokenizer: Any,
    source_language: str,
    target_language: str,
    texts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    on_batch: Callable[[list[tuple[int, str]]], None] | None = None,
    show_progress: bool = True,
) -> list[str]:
    """Greedy translations of ``texts``, one string per input, in order.

    Prompts are harmony conversations (:func:`langkit.harmony.render_prompt`), or the tokenizer's chat
    template for a model that is not gpt-oss (:func:`prompt_format`), batched by length and padded on the
    left so that every row's answer starts at the same position; generation stops at ``<|return|>`` or
    ``<|end|>`` (the end-of-sequence token for chat models), and only the new tokens are decoded.
    ``on_batch`` gets each batch's ``(input index, output)`` pairs as soon as it is done (the suite caches
    them there, so a killed run loses at most one batch)."""
    import torch

    if not texts:
        return []
    fmt = prompt_format(tokenizer)
    if fmt == "harmony":
        stop_ids = stop_token_ids(tokenizer)
        rendered = [render_prompt(source_language, target_language, text) for text in texts]
    else:
        eos = tokenizer.eos_token_id
        stop_ids = [int(i) for i in (eos if isinstance(eos, list) else [eos]) if i is not None]
        rendered = [_chat_prompt(tokenizer, source_language, target_language, text) for text in texts]
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = stop_ids[0]
    prompts: list[list[int]] = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in rendered]
    # Similar lengths together: less padding. Outputs are put back in input order below.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    device = next(model.parameters()).device
    outputs = [""] * len(texts)
    was_training = model.training
    model.eval()
    try:
        for batch in (progress(batches, desc=f"{source_language}->{target_language}", total=len(batches))
                      if show_progress else batches):
            width = max(len(prompts[i]) for i in batch)
            ids = [[pad_id] * (width - len(prompts[i])) + prompts[i] for i in batch]  # [B, width], left-padded
            mask = [[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in batch]
            with torch.no_grad():
                generated = model.generate(
                    input_ids=torch.tensor(ids, device=device),
                    attention_mask=torch.tensor(mask, device=device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=stop_ids,
                    pad_token_id=pad_id,
                    use_cache=True,
                )
            for i, row in zip(batch, generated[:, width:].tolist(), strict=True):  # [B, new]
                outputs[i] = decode_answer(tokenizer, row, stop_ids)
            if on_batch is not None:
                on_batch([(i, outputs[i]) for i in batch])
    finally:
        model.train(was_training)
    return outputs


def to_device(model: Any) -> Any:
    """The model on the GPU when there is one and it was loaded on the CPU."""
    import torch

    if torch.cuda.is_available() and next(model.parameters()).device.type == "cpu":
        model = model.to("cuda")
    return model
