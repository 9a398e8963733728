"""Training data: corpus records -> examples -> a resumable stream of steps -> (per-process) batches.

Two kinds of example come out of the corpus's train split:

* ``translation``: each aligned pair gives two harmony chat examples (pivot -> language and language ->
  pivot), loss on the final answer and its ``<|return|>`` only;
* ``monolingual`` (with ``train.monolingual``): each record's text as plain continued pre-training text,
  loss on every token.

Without ``train.mix`` both kinds share one seeded stream (:class:`ExampleStream`); with it, each kind has its
own stream and :class:`MixedStream` interleaves them in the configured proportions. Either way the stream's
position is a few integers, saved in every checkpoint, so a resumed run continues with the very next example.

With several processes every process draws the same *global* step from the stream (``train.batch_size`` x
processes examples, or packed rows) and keeps its own slice of it (:func:`next_batch`), so the stream position
is the same everywhere and independent of how many processes read it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from langkit.attention import EAGER, packed_eager_masks
from langkit.config import MIX_KINDS, TrainConfig
from langkit.harmony import IGNORE_INDEX, Example, encode_monolingual, encode_translation
from langkit.models import DTYPES
from langkit.utils import get_logger

log = get_logger("train")

KINDS = MIX_KINDS
MONOLINGUAL, TRANSLATION = KINDS


def read_records(path: Path, languages: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of a corpus split (parquet) whose ``language`` is one of ``languages``, in file order."""
    import pyarrow.parquet as pq

    columns = ["language", "text", "pivot_language", "pivot_text"]
    table = pq.read_table(path, columns=columns).to_pylist()
    wanted = set(languages)
    return [row for row in table if row["language"] in wanted]


def labelled_tokens(example: Example) -> int:
    """Tokens that carry loss. The model shifts labels by one, so labels[0] never does."""
    return sum(1 for label in example.labels[1:] if label != IGNORE_INDEX)


def encode_records_with_kinds(records: Sequence[dict[str, Any]], tokenizer: Any,
                              train: TrainConfig) -> tuple[list[Example], list[str]]:
    """Training examples and the kind of each (``translation`` or ``monolingual``): two translation
    directions per aligned pair, plus (``train.monolingual``) the plain text of every record, in record
    order. Examples left with no loss after truncation are dropped."""
    examples: list[Example] = []
    kinds: list[str] = []
    dropped = 0
    for row in records:
        candidates = []
        text, pivot, pivot_lang = row["text"] or "", row.get("pivot_text") or "", row.get("pivot_language") or ""
        if text and pivot and pivot_lang:
            candidates.append((TRANSLATION, encode_translation(tokenizer, pivot_lang, row["language"], pivot, text,
                                                               train.max_length)))
            candidates.append((TRANSLATION, encode_translation(tokenizer, row["language"], pivot_lang, text, pivot,
                                                               train.max_length)))
        if text and train.monolingual:
            candidates.append((MONOLINGUAL, encode_monolingual(tokenizer, text, train.max_length)))
        for kind, example in candidates:
            if labelled_tokens(example):
                examples.append(example)
                kinds.append(kind)
            else:
                dropped += 1
    if dropped:
        log.warning("dropped %d example(s) with no answer token left within train.max_length=%d",
                    dropped, train.max_length)
    return examples, kinds


def encode_records(records: Sequence[dict[str, Any]], tokenizer: Any, train: TrainConfig) -> list[Example]:
    """The examples of :func:`encode_records_with_kinds`, without their kinds."""
    return encode_records_with_kinds(records, tokenizer, train)[0]


def load_training_data(path: Path, tokenizer: Any, languages: Sequence[str],
                       train: TrainConfig) -> tuple[list[Example], list[str]]:
    """(examples, kinds) of a corpus split. ``ValueError`` when there are none, or when ``train.mix`` asks
    for a kind the split does not give."""
    examples, kinds = encode_records_with_kinds(read_records(path, languages), tokenizer, train)
    if not examples:
        raise ValueError(
            f"{path} gives no training example in {', '.join(languages)} "
            f"(monolingual={train.monolingual}, max_length={train.max_length})"
        )
    for kind, weight in train.mix.items():
        if weight > 0 and kind not in kinds:
            raise ValueError(f"train.mix.{kind} is {weight:g} but {path} gives no {kind} example "
                             f"in {', '.join(languages)}")
    return examples, kinds


def load_examples(path: Path, tokenizer: Any, languages: Sequence[str], train: TrainConfig) -> list[Example]:
    """The examples of a corpus split; ``ValueError`` when there are none."""
    return load_training_data(path, tokenizer, languages, train)[0]


# --------------------------------------------------------------------------------------------------
# Collation
# --------------------------------------------------------------------------------------------------


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: ``input_ids``, ``attention_mask`` and ``labels`` (-100 on
    padding), each [B, L]."""
    length = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def collate_packed(rows: Sequence[Sequence[Example]], pad_id: int) -> dict[str, torch.Tensor]:
    """Packed rows, right-padded to the longest row: ``input_ids``, ``attention_mask``, ``labels`` and
    ``position_ids``, each [R, L]. Position ids restart at 0 for every example, which is what keeps
    examples apart in attention (``langkit.attention.segment_ids``); the padding tail gets its own run of
    positions, and no example attends to it (attention_mask 0). Each example's first label is -100: the
    model predicts label t+1 at position t, and in a packed row that position holds the previous example's
    last token (alone, that label is never predicted either)."""
    length = max(sum(len(e.input_ids) for e in row) for row in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    position_ids = torch.zeros((len(rows), length), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e.input_ids)
            input_ids[r, at:at + n] = torch.tensor(e.input_ids)
            labels[r, at + 1:at + n] = torch.tensor(e.labels[1:], dtype=torch.long)
            attention_mask[r, at:at + n] = 1
            position_ids[r, at:at + n] = torch.arange(n)
            at += n
        position_ids[r, at:] = torch.arange(length - at)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "position_ids": position_ids}


# --------------------------------------------------------------------------------------------------
# Streams: the order of examples, resumable from a few integers
# --------------------------------------------------------------------------------------------------


class Stream(Protocol):
    def take(self, n: int) -> list[int]: ...
    def peek(self) -> int: ...
    def state(self) -> dict[str, Any]: ...
    def load_state(self, state: dict[str, Any]) -> None: ...


@dataclass
class ExampleStream:
    """An endless stream of example indices: every pass (epoch) is a fresh seeded shuffle, so the
    position (epoch, offset) is all a resumed run needs to continue exactly where it stopped."""

    size: int
    seed: int
    epoch: int = 0
    offset: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def _shuffled(self) -> list[int]:
        order = list(range(self.size))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            if not self._order:
                self._order = self._shuffled()
            out.append(self._order[self.offset])
            self.offset += 1
            if self.offset == self.size:
                self.epoch, self.offset, self._order = self.epoch + 1, 0, []
        return out

    def peek(self) -> int:
        """The next index, without taking it (the position does not move)."""
        if not self._order:
            self._order = self._shuffled()
        return self._order[self.offset]

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "offset": self.offset, "size": self.size, "seed": self.seed}

    def load_state(self, state: dict[str, Any]) -> None:
        if "mix" in state or state["size"] != self.size or state["seed"] != self.seed:
            raise ValueError(
                f"checkpoint data position is for {state.get('size')} examples (seed {state.get('seed')}"
                f"{', mixed' if 'mix' in state else ''}), but the data now gives {self.size} (seed {self.seed}): "
                "the corpus or config changed; set train.resume=false to start over"
            )
        self.epoch, self.offset, self._order = state["epoch"], state["offset"], []


class MixedStream:
    """Several kinds of example in fixed proportions: each kind has its own :class:`ExampleStream` (over the
    indices of its examples), and each next example comes from the kind furthest behind its share
    (deficit ``weight x (drawn + 1) - taken``, ties to the first kind). So after any n examples each kind has
    had its share of n to within one example, and the position is the per-kind counts and stream positions.

    ``pools`` maps a kind to the (global) indices of its examples; ``weights`` maps a kind to its share
    (normalised here; kinds of weight 0 are never drawn)."""

    def __init__(self, pools: Mapping[str, Sequence[int]], weights: Mapping[str, float], seed: int) -> None:
        total = sum(weights.values())
        self.kinds = [k for k in pools if weights.get(k, 0) > 0]
        if not self.kinds or total <= 0:
            raise ValueError("a mixture needs at least one kind with a weight > 0")
        self.shares = {k: weights[k] / total for k in self.kinds}
        self.indices = {k: list(pools[k]) for k in self.kinds}
        for kind in self.kinds:
            if not self.indices[kind]:
                raise ValueError(f"train.mix.{kind} > 0 but there is no {kind} example")
        # Each kind its own seed, so one kind's order does not depend on how many kinds there are.
        self.streams = {k: ExampleStream(len(self.indices[k]), seed * 31 + i) for i, k in enumerate(KINDS)
                        if k in self.shares}
        self.taken = {k: 0 for k in self.kinds}

    def _next_kind(self) -> str:
        drawn = sum(self.taken.values())
        return max(self.kinds, key=lambda k: (self.shares[k] * (drawn + 1) - self.taken[k], -self.kinds.index(k)))

    def take(self, n: int) -> list[int]:
        out = []
        for _ in range(n):
            kind = self._next_kind()
            out.append(self.indices[kind][self.streams[kind].take(1)[0]])
            self.taken[kind] += 1
        return out

    def peek(self) -> int:
        kind = self._next_kind()
        return self.indices[kind][self.streams[kind].peek()]

    def state(self) -> dict[str, Any]:
        return {"mix": dict(self.shares), "taken": dict(self.taken),
                "streams": {k: s.state() for k, s in self.streams.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        if "mix" not in state or set(state["mix"]) != set(self.shares) or any(
                abs(state["mix"][k] - v) > 1e-12 for k, v in self.shares.items()):
            raise ValueError(
                f"checkpoint data position is for the mixture {state.get('mix')}, but train.mix now gives "
                f"{self.shares}: set train.resume=false to start over"
            )
        for kind, stream in self.streams.items():
            stream.load_state(state["streams"][kind])
        self.taken = {k: int(state["taken"][k]) for k in self.kinds}


def make_stream(kinds: Sequence[str], train: TrainConfig) -> ExampleStream | MixedStream:
    """The stream of a run: one seeded shuffle of all examples, or with ``train.mix`` a :class:`MixedStream`."""
    if not train.mix:
        return ExampleStream(len(kinds), train.seed)
    pools = {kind: [i for i, k in enumerate(kinds) if k == kind] for kind in KINDS}
    return MixedStream(pools, train.mix, train.seed)


def take_packed(stream: Stream, lengths: Sequence[int], rows: int, capacity: int) -> list[list[int]]:
    """Example indices for one packed step: ``rows`` rows of at most ``capacity`` tokens. Examples come in
    stream order, each into the first row with room (first fit); the step ends at the first example that
    fits no row (it opens the next step, so the stream position stays exact for resuming) or that this step
    already holds (a data set smaller than one step)."""
    bins: list[list[int]] = []
    free: list[int] = []
    taken: set[int] = set()
    while True:
        index = stream.peek()
        if index in taken:
            break
        n = lengths[index]
        if n > capacity:
            raise ValueError(f"example {index} has {n} tokens, more than train.max_length={capacity}")
        slot = next((b for b, room in enumerate(free) if room >= n), None)
        if slot is None:
            if len(bins) == rows:
                break
            bins.append([])
            free.append(capacity)
            slot = len(bins) - 1
        stream.take(1)
        taken.add(index)
        bins[slot].append(index)
        free[slot] -= n
    return bins


# --------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """One optimizer step: this process's model inputs (``labels`` included) and what the whole step
    (all processes together) holds."""

    inputs: dict[str, Any]
    tokens: int
    """Non-padding tokens of the step, all processes together."""
    slots: int
    """Token positions computed, padding included (rows x row length), all processes together."""
    examples: int
    """Examples in the step, all processes together."""
    indices: list[int] = field(default_factory=list)
    """The step's example indices, all processes together."""
    loss_share: float = 1.0
    """This process's share of the step's labelled tokens: the step's loss is the sum over processes of
    (local mean loss x share)."""


def next_batch(stream: Stream, examples: Sequence[Example], train: TrainConfig, pad_id: int,
               sliding_window: int | None, rank: int = 0, processes: int = 1,
               lengths: Sequence[int] | None = None) -> Batch:
    """The next step's batch for process ``rank`` of ``processes``. The global step is ``train.batch_size``
    x ``processes`` examples padded to the longest of each process's share, or with ``train.packing`` that
    many packed rows; process ``rank`` gets rows ``rank * batch_size`` to ``(rank + 1) * batch_size - 1``.
    Eager attention gets packed rows' masks as 4-D block-diagonal masks (gpt-oss does not derive them from
    position ids); ``langkit_sink`` reads the position ids.

    A process whose share is empty (packing a data set smaller than one step) gets the first row again
    with ``loss_share`` 0: it runs forward and backward like the others, and contributes nothing.
    ``lengths`` (the examples' token counts) saves measuring every example again on each step."""
    per_process = train.batch_size
    if train.packing:
        if lengths is None:
            lengths = [len(e.input_ids) for e in examples]
        rows = take_packed(stream, lengths, per_process * processes, train.max_length)
    else:
        rows = [[i] for i in stream.take(per_process * processes)]
    shares = [rows[r * per_process:(r + 1) * per_process] for r in range(processes)]

    def row_length(row: list[int]) -> int:
        return sum(len(examples[i].input_ids) for i in row)

    slots = sum(len(share) * max(row_length(row) for row in share) for share in shares if share)
    labelled = [sum(labelled_tokens(examples[i]) for row in share for i in row) for share in shares]
    mine = shares[rank] or rows[:1]
    share = labelled[rank] / sum(labelled) if shares[rank] else 0.0
    if train.packing:
        batch = collate_packed([[examples[i] for i in row] for row in mine], pad_id)
        inputs: dict[str, Any] = dict(batch)
        if train.attention == EAGER:
            inputs["attention_mask"] = packed_eager_masks(batch["position_ids"], batch["attention_mask"],
                                                          sliding_window, DTYPES[train.dtype])
    else:
        inputs = dict(collate([examples[row[0]] for row in mine], pad_id))
    indices = [i for row in rows for i in row]
    return Batch(inputs, sum(row_length(row) for row in rows), slots, len(indices), indices, share)


def to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value.to(device)
