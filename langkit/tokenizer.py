"""Stage 2: the gpt-oss tokenizer, its "tokenization tax" per language, and its extension.

* :func:`load_base_tokenizer` gives the real o200k_harmony tokenizer (201,088 ids): from a local model
  folder, from the Hub when it can be reached, or rebuilt offline from the o200k_base vocabulary that the
  ``quicktok-v1`` package ships, checked against the SHA-256 that tiktoken itself checks.
* :func:`fertility` measures what a tokenizer costs on a text: tokens per word, characters per token.
* :func:`extend_tokenizer` learns new BPE merges on the target-language text, *continuing* gpt-oss's
  own merges: each new token gets an id from 201,088 up and a merge appended after all the base merges,
  so every base id keeps its meaning, text without the new pairs tokenizes exactly as before, and every
  new token is reachable. (``add_tokens`` is wrong for byte-level BPE: see ../shared/FACTS.md.)
"""

from __future__ import annotations

import base64
import heapq
import json
import os
import shutil
import struct
import tempfile
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from langkit.utils import atomic_write_text, cache_dir, get_logger, progress, sha256_file, write_json

log = get_logger("tokenizer")

# o200k_base / o200k_harmony facts (see ../shared/FACTS.md).
BASE_VOCAB_SIZE = 201_088
"""Ids 0..201,087: 199,998 byte-level BPE tokens, then the harmony special tokens."""
NUM_REGULAR_TOKENS = 199_998
O200K_BASE_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
GPT_OSS_HUB_IDS = ("openai/gpt-oss-20b", "openai/gpt-oss-120b")
OFFLINE_NAME = "o200k_harmony"

# The split pattern of o200k_base, as published in tiktoken (tiktoken_ext/openai_public.py).
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

# gpt-oss's own choices (its tokenizer_config.json): generation ends at <|return|>, padding is <|endoftext|>.
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|return|>"
PAD_TOKEN = "<|endoftext|>"

# A compact harmony chat template (written for langkit): system, developer, user and assistant turns;
# assistant turns go to the ``final`` channel; the prompt for generation ends with the assistant header.
HARMONY_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "<|start|>assistant<|channel|>final<|message|>{{ message['content'] }}"
    "{%- if loop.last and not add_generation_prompt -%}<|return|>{%- else -%}<|end|>{%- endif -%}"
    "{%- else -%}"
    "<|start|>{{ message['role'] }}<|message|>{{ message['content'] }}<|end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|start|>assistant<|channel|>final<|message|>{%- endif -%}"
)


# --------------------------------------------------------------------------------------------------
# The base tokenizer
# --------------------------------------------------------------------------------------------------


def _quicktok_data() -> Path:
    import quicktok

    return Path(quicktok.__file__).parent / "data"


def _read_o200k_ranks() -> dict[bytes, int]:
    """o200k_base's byte-level BPE ranks from quicktok-v1's ``o200k.vocab``:
    a little-endian u32 count, then per token a u16 byte length, the bytes and a u32 rank."""
    data = (_quicktok_data() / "o200k.vocab").read_bytes()
    (count,) = struct.unpack_from("<I", data, 0)
    offset, ranks = 4, {}
    for _ in range(count):
        (length,) = struct.unpack_from("<H", data, offset)
        offset += 2
        token = data[offset : offset + length]
        offset += length
        (rank,) = struct.unpack_from("<I", data, offset)
        offset += 4
        ranks[token] = rank
    return ranks


def _read_harmony_specials() -> dict[int, str]:
    """The harmony special tokens from quicktok-v1's ``o200k_harmony.special``:
    a u32 count, then per token a u32 id, a u16 length and the UTF-8 text."""
    data = (_quicktok_data() / "o200k_harmony.special").read_bytes()
    (count,) = struct.unpack_from("<I", data, 0)
    offset = 4
    specials: dict[int, str] = {}
    for _ in range(count):
        token_id, length = struct.unpack_from("<IH", data, offset)
        offset += 6
        name = data[offset : offset + length].decode("utf-8")
        offset += length
        # The file lists id 200,018 twice: <|endofprompt|> and <|reserved_200018|>. gpt-oss names it
        # <|endofprompt|>, so a real name wins over a reserved placeholder.
        if token_id not in specials or specials[token_id].startswith("<|reserved_"):
            specials[token_id] = name
    return specials


def write_o200k_tiktoken(path: Path) -> Path:
    """Write o200k_base as a ``.tiktoken`` file (base64 token, space, rank; sorted by rank) and check it
    against the published SHA-256. This file also lets ``openai_harmony`` work offline
    (``TIKTOKEN_ENCODINGS_BASE``)."""
    ranks = _read_o200k_ranks()
    lines = [f"{base64.b64encode(tok).decode('ascii')} {rank}\n" for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1])]
    atomic_write_text(path, "".join(lines))
    digest = sha256_file(path)
    if digest != O200K_BASE_SHA256:
        path.unlink()
        raise RuntimeError(
            f"o200k_base rebuilt from quicktok-v1 has SHA-256 {digest}, expected {O200K_BASE_SHA256}: "
            "the package's vocabulary is not the one gpt-oss uses"
        )
    return path


def _load_tiktoken_file(path: Path) -> dict[bytes, int]:
    ranks = {}
    for line in path.read_text(encoding="ascii").splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


def build_offline_tokenizer(out_dir: Path) -> Path:
    """Rebuild gpt-oss's tokenizer (o200k_harmony) into a Hugging Face tokenizer folder, offline."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tiktoken_file = write_o200k_tiktoken(cache_dir() / "o200k_base.tiktoken")
    ranks = _load_tiktoken_file(tiktoken_file)
    if len(ranks) != NUM_REGULAR_TOKENS:
        raise RuntimeError(f"o200k_base has {len(ranks)} tokens, expected {NUM_REGULAR_TOKENS}")

    class _LocalConverter(TikTokenConverter):
        # transformers reads the file with the tiktoken package; we already hold the checked ranks.
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return ranks

    backend = _LocalConverter(vocab_file=str(tiktoken_file), pattern=O200K_PATTERN).converted()
    specials = _read_harmony_specials()
    expected_ids = list(range(NUM_REGULAR_TOKENS, BASE_VOCAB_SIZE))
    if sorted(specials) != expected_ids:
        raise RuntimeError("o200k_harmony special tokens do not fill ids 199,998..201,087")
    from tokenizers import AddedToken

    # Added in id order, so each lands on its harmony id (the BPE vocabulary ends at 199,997).
    backend.add_special_tokens([AddedToken(specials[i], special=True, normalized=False) for i in expected_ids])
    for i in (NUM_REGULAR_TOKENS, BASE_VOCAB_SIZE - 1):
        if backend.token_to_id(specials[i]) != i:
            raise RuntimeError(f"special token {specials[i]} did not land on id {i}")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN
    )
    tok.chat_template = HARMONY_CHAT_TEMPLATE
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    tok.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def offline_tokenizer_dir() -> Path:
    """The rebuilt o200k_harmony tokenizer folder, built once and cached (about 5 s the first time)."""
    out = cache_dir() / OFFLINE_NAME
    if not (out / "tokenizer.json").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        log.info("rebuilding the gpt-oss tokenizer (o200k_harmony) offline from quicktok-v1 into %s", out)
        build_offline_tokenizer(out)
    return out


def load_base_tokenizer(name: str = "openai/gpt-oss-20b") -> Any:
    """The gpt-oss tokenizer, from the first place that has it:

    1. ``name`` is a local folder holding a tokenizer (a downloaded model, or an earlier langkit output);
    2. ``name`` is a Hub id and the Hub (or its local cache) answers;
    3. ``name`` is a gpt-oss id or ``o200k_harmony``: rebuilt offline from quicktok-v1 (cached).
    """
    from transformers import AutoTokenizer

    if Path(name).is_dir():
        return AutoTokenizer.from_pretrained(name)
    if name != OFFLINE_NAME:
        try:
            tok = AutoTokenizer.from_pretrained(name)
            log.info("loaded tokenizer %s from the Hub or its cache", name)
            return tok
        except (OSError, ValueError) as err:
            if name not in GPT_OSS_HUB_IDS:
                raise
            log.info("%s not reachable (%s); using the offline rebuild of o200k_harmony", name, type(err).__name__)
    return AutoTokenizer.from_pretrained(str(offline_tokenizer_dir()))


# --------------------------------------------------------------------------------------------------
# Fertility: what a tokenizer costs on a text
# --------------------------------------------------------------------------------------------------


@dataclass
class Fertility:
    language: str
    path: str
    lines: int
    words: int
    characters: int
    tokens: int

    @property
    def tokens_per_word(self) -> float:
        return self.tokens / self.words if self.words else 0.0

    @property
    def chars_per_token(self) -> float:
        return self.characters / self.tokens if self.tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_word": round(self.tokens_per_word, 4),
                "chars_per_token": round(self.chars_per_token, 4)}


def read_lines(path: str | Path) -> list[str]:
    """A plain-text file, one segment per line: NFC, surrounding whitespace stripped, empty lines skipped."""
    with open(path, encoding="utf-8-sig") as f:
        lines = [unicodedata.normalize("NFC", line.strip()) for line in f]
    return [line for line in lines if line]


def fertility(tokenizer: Any, lines: Sequence[str], language: str = "", path: str = "") -> Fertility:
    """Count lines, whitespace words, characters and tokens (no special tokens added)."""
    tokens = sum(len(ids) for ids in tokenizer(list(lines), add_special_tokens=False)["input_ids"]) if lines else 0
    return Fertility(
        language=language, path=path, lines=len(lines), words=sum(len(line.split()) for line in lines),
        characters=sum(len(line) for line in lines), tokens=tokens,
    )


def parse_text_args(items: Iterable[str]) -> list[tuple[str, Path]]:
    """``LANG:PATH`` arguments (``wol_Latn:data/wol.txt``) -> (code, path), checked."""
    from langkit.languages import get_language

    pairs = []
    for item in items:
        code, sep, path = item.partition(":")
        if not sep or not path:
            raise ValueError(f"--text {item!r} must look like LANG:PATH, e.g. wol_Latn:corpus/wol.txt")
        get_language(code)
        if not Path(path).is_file():
            raise FileNotFoundError(f"--text {item!r}: no such file {path}")
        pairs.append((code, Path(path)))
    return pairs


# --------------------------------------------------------------------------------------------------
# Extension: continued BPE on top of gpt-oss's merges
# --------------------------------------------------------------------------------------------------


@dataclass
class NewToken:
    id: int
    """Id in the extended vocabulary: 201,088 and up, in merge order."""
    token: str
    """The token in the tokenizer's byte-level alphabet (as stored in tokenizer.json)."""
    text: str
    """The same token as readable text (may hold a partial UTF-8 character, shown as U+FFFD)."""
    merge: tuple[str, str]
    """The two tokens this one merges, in the byte-level alphabet."""
    base_ids: list[int]
    """The base-vocabulary ids this token replaces: what training averages to initialise its embedding."""
    frequency: int
    """How often the merge applied in the training text when it was learned."""


class _PairIndex:
    """Pair statistics over a bag of words (each a list of token ids), kept up to date as pairs merge.

    A pair's score is the sum over the words holding it of (occurrences x the word's weight); the
    weight of a word is its count divided by its language's total token count, so that each language
    pulls on the shared budget with the same force however large its corpus is.
    """

    def __init__(self, words: list[list[int]], weights: list[float], counts: list[int]) -> None:
        self.words, self.weights, self.counts = words, weights, counts
        self.score: dict[tuple[int, int], float] = defaultdict(float)
        self.raw: dict[tuple[int, int], int] = defaultdict(int)
        self.where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for w, word in enumerate(words):
            self._add(w, word, +1)
        self.heap = [(-s, p) for p, s in self.score.items()]
        heapq.heapify(self.heap)

    def _add(self, w: int, word: list[int], sign: int) -> set[tuple[int, int]]:
        touched = set()
        for pair in zip(word, word[1:], strict=False):
            self.score[pair] += sign * self.weights[w]
            self.raw[pair] += sign * self.counts[w]
            if sign > 0:
                self.where[pair].add(w)
            touched.add(pair)
        return touched

    def best(self, min_frequency: int, banned: set[tuple[int, int]]) -> tuple[int, int] | None:
        while self.heap:
            neg, pair = heapq.heappop(self.heap)
            current = self.score.get(pair, 0.0)
            if abs(current + neg) > 1e-12 * max(1.0, abs(current)):
                continue  # stale entry; the pair was re-pushed with its new score
            if pair in banned or self.raw[pair] < min_frequency:
                continue
            return pair
        return None

    def merge(self, pair: tuple[int, int], new_id: int) -> int:
        """Replace ``pair`` by ``new_id`` in every word holding it (left to right, as BPE does)."""
        applied = 0
        touched: set[tuple[int, int]] = set()
        for w in sorted(self.where.pop(pair, ())):
            word = self.words[w]
            touched |= self._add(w, word, -1)
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
                    merged.append(new_id)
                    applied += self.counts[w]
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            self.words[w] = merged
            touched |= self._add(w, merged, +1)
        for p in touched:
            if self.raw[p] <= 0:
                self.score.pop(p, None)
                self.raw.pop(p, None)
                self.where.pop(p, None)
            else:
                heapq.heappush(self.heap, (-self.score[p], p))
        return applied


def _backend_json(tokenizer: Any) -> dict[str, Any]:
    return json.loads(tokenizer.backend_tokenizer.to_str())


def learn_merges(
    tokenizer: Any, texts: Mapping[str, Sequence[str]], budget: int, min_frequency: int = 2
) -> tuple[list[NewToken], dict[str, Any]]:
    """Learn up to ``budget`` new merges from ``texts`` ({language: lines}) continuing the tokenizer's BPE.

    Returns the new tokens (in merge order, ids from ``len(tokenizer)`` up) and the extended
    ``tokenizer.json`` content.
    """
    backend = tokenizer.backend_tokenizer
    data = _backend_json(tokenizer)
    model = data["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"can only extend a BPE tokenizer, this one is {model.get('type')}")
    vocab: dict[str, int] = model["vocab"]
    # The special tokens (ids 199,998..201,087) live in the added vocabulary, which tokenizers numbers
    # after the model's vocabulary when it is loaded. Entering them in the model's vocabulary at their
    # own ids pins them there once new ids exist past them. (Text never reaches them through BPE: special
    # tokens are split off before pre-tokenization, and no merge produces them.)
    for added in data.get("added_tokens", []):
        vocab.setdefault(added["content"], added["id"])
    id_to_token = {i: t for t, i in vocab.items()}
    first_new_id = len(tokenizer)

    # Bag of pre-tokenized words per language, each encoded with the base BPE.
    word_counts: Counter[tuple[str, str]] = Counter()
    for language, lines in texts.items():
        for line in progress(lines, desc=f"pre-tokenizing {language}"):
            for piece, _ in backend.pre_tokenizer.pre_tokenize_str(line):
                word_counts[(language, piece)] += 1
    language_tokens: Counter[str] = Counter()
    words, weights, counts = [], [], []
    encoded: dict[str, list[int]] = {}
    for (language, piece), count in word_counts.items():
        if piece not in encoded:
            encoded[piece] = [t.id for t in backend.model.tokenize(piece)]
        language_tokens[language] += count * len(encoded[piece])
    for (language, piece), count in word_counts.items():
        words.append(list(encoded[piece]))
        weights.append(count / language_tokens[language])
        counts.append(count)

    index = _PairIndex(words, weights, counts)
    base_ids: dict[int, list[int]] = {}
    new_tokens: list[NewToken] = []
    banned: set[tuple[int, int]] = set()
    while len(new_tokens) < budget:
        pair = index.best(min_frequency, banned)
        if pair is None:
            break
        left, right = id_to_token[pair[0]], id_to_token[pair[1]]
        merged = left + right
        if merged in vocab:
            # Already a base token that BPE reaches another way; a second id for it would be ambiguous.
            banned.add(pair)
            continue
        new_id = first_new_id + len(new_tokens)
        frequency = index.merge(pair, new_id)
        vocab[merged] = new_id
        id_to_token[new_id] = merged
        model["merges"].append([left, right])
        base_ids[new_id] = base_ids.get(pair[0], [pair[0]]) + base_ids.get(pair[1], [pair[1]])
        new_tokens.append(
            NewToken(
                id=new_id, token=merged, text=tokenizer.decode(base_ids[new_id]), merge=(left, right),
                base_ids=base_ids[new_id], frequency=frequency,
            )
        )
    log.info("learned %d new merges (budget %d) from %d distinct words", len(new_tokens), budget, len(encoded))
    return new_tokens, data


def extend_tokenizer(
    tokenizer: Any, texts: Mapping[str, Sequence[str]], budget: int, out_dir: str | Path, min_frequency: int = 2
) -> tuple[Any, list[NewToken]]:
    """Extend ``tokenizer`` with merges learned on ``texts`` and save it to ``out_dir``: a Hugging Face
    tokenizer folder (tokenizer.json, config, special tokens, harmony chat template) plus
    ``new_tokens.json`` next to it listing each new token with its base ids."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    new_tokens, data = learn_merges(tokenizer, texts, budget, min_frequency)
    backend = Tokenizer.from_str(json.dumps(data, ensure_ascii=False))
    extended = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=tokenizer.bos_token or BOS_TOKEN,
        eos_token=tokenizer.eos_token or EOS_TOKEN,
        pad_token=tokenizer.pad_token or PAD_TOKEN,
    )
    extended.chat_template = tokenizer.chat_template or HARMONY_CHAT_TEMPLATE
    expected = len(tokenizer) + len(new_tokens)
    if len(extended) != expected:
        raise RuntimeError(f"extended tokenizer has {len(extended)} ids, expected {expected}")
    out_dir.mkdir(parents=True, exist_ok=True)
    extended.save_pretrained(out_dir)
    write_json(out_dir / "new_tokens.json", [asdict(t) for t in new_tokens])
    return AutoTokenizer.from_pretrained(str(out_dir)), new_tokens


def load_new_tokens(path: str | Path) -> list[NewToken]:
    """Read the ``new_tokens.json`` written by :func:`extend_tokenizer`."""
    return [NewToken(**{**item, "merge": tuple(item["merge"])}) for item in json.loads(Path(path).read_text("utf-8"))]


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------


def _texts_by_language(parquet: Path, column: str, language_column: str) -> dict[str, list[str]]:
    import pyarrow.parquet as pq

    table = pq.read_table(parquet, columns=[language_column, column]).to_pydict()
    texts: dict[str, list[str]] = defaultdict(list)
    for language, text in zip(table[language_column], table[column], strict=True):
        if language and text:
            texts[language].append(text)
    return dict(texts)


def run(cfg: Any, run_dir: Any) -> Path:
    """Extend the base tokenizer with merges learned on the corpus's train split, and measure the
    fertility of both tokenizers on the test split (target languages and their pivots)."""
    train_split = run_dir.require(run_dir.split("train"), "corpus")
    test_split = run_dir.require(run_dir.split("test"), "corpus")
    texts = {lang: lines for lang, lines in _texts_by_language(train_split, "text", "language").items()
             if lang in cfg.languages}
    if not texts:
        raise ValueError(f"{train_split} holds no text in {', '.join(cfg.languages)}")
    base = load_base_tokenizer(cfg.tokenizer.base)
    extended, new_tokens = extend_tokenizer(
        base, texts, cfg.tokenizer.budget, run_dir.tokenizer, min_frequency=cfg.tokenizer.min_frequency
    )
    measured = _texts_by_language(test_split, "text", "language")
    for lang, lines in _texts_by_language(test_split, "pivot_text", "pivot_language").items():
        measured.setdefault(lang, []).extend(lines)
    rows = []
    for lang in sorted(measured):
        before = fertility(base, measured[lang], lang, str(test_split))
        after = fertility(extended, measured[lang], lang, str(test_split))
        reduction = round(1 - after.tokens / before.tokens, 4) if before.tokens else 0.0
        rows.append({"language": lang, "base": before.to_dict(), "extended": after.to_dict(),
                     "token_reduction": reduction})
        log.info("%s: %.3f -> %.3f tokens per word (%+.1f%% tokens)", lang, before.tokens_per_word,
                 after.tokens_per_word, -100 * reduction)
    write_json(run_dir.tokenizer_stage / "stats.json", {
        "base": cfg.tokenizer.base, "budget": cfg.tokenizer.budget, "new_tokens": len(new_tokens),
        "vocab_size": len(extended), "measured_on": str(test_split), "languages": rows,
    })
    return Path(run_dir.tokenizer_stage)
