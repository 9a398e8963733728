"""Translation examples in gpt-oss's harmony chat format, shared by training and evaluation.

A translation request is rendered as::

    <|start|>system<|message|>{system}<|end|>
    <|start|>user<|message|>Translate from French to Wolof.\n\n{source}<|end|>
    <|start|>assistant<|channel|>final<|message|>{target}<|return|>

(on one line; the breaks are for reading). Training puts the loss on ``{target}<|return|>`` only;
generation stops at ``<|return|>`` or ``<|end|>``. The answer goes straight to the ``final`` channel:
a translation needs no visible reasoning, and it keeps examples short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langkit.languages import get_language

SYSTEM_MESSAGE = (
    "You are a careful translator for African languages and their pivot languages.\n"
    "Reasoning: low\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message."
)
STOP_TOKENS = ("<|return|>", "<|end|>")


def translation_request(source_language: str, target_language: str, source_text: str) -> str:
    src, tgt = get_language(source_language), get_language(target_language)
    return f"Translate from {src.english_name} to {tgt.english_name}.\n\n{source_text}"


def render_prompt(source_language: str, target_language: str, source_text: str) -> str:
    """The conversation up to the assistant's answer, as text (special tokens written out)."""
    user = translation_request(source_language, target_language, source_text)
    return (
        f"<|start|>system<|message|>{SYSTEM_MESSAGE}<|end|>"
        f"<|start|>user<|message|>{user}<|end|>"
        "<|start|>assistant<|channel|>final<|message|>"
    )


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    """-100 where no loss is taken (the prompt), the token id where it is (the answer)."""


IGNORE_INDEX = -100


def encode_translation(
    tokenizer: Any, source_language: str, target_language: str, source_text: str, target_text: str, max_length: int
) -> Example:
    """A supervised example: loss on the answer and its closing ``<|return|>`` only."""
    prompt = tokenizer(render_prompt(source_language, target_language, source_text), add_special_tokens=False)["input_ids"]
    answer = tokenizer(target_text + "<|return|>", add_special_tokens=False)["input_ids"]
    input_ids = (prompt + answer)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt) + answer)[:max_length]
    return Example(input_ids, labels)


def encode_monolingual(tokenizer: Any, text: str, max_length: int) -> Example:
    """Plain text for continued pre-training: loss on every token, ending with ``<|endoftext|>``."""
    ids = tokenizer(text + "<|endoftext|>", add_special_tokens=False)["input_ids"][:max_length]
    return Example(ids, list(ids))
