"""Stage 2: the gpt-oss tokenizer, its "tokenization tax" per language, and its extension.

* :func:`load_base_tokenizer` gives the real o200k_harmony tokenizer (201,088 ids): from a local model
  folder or the Hugging Face cache, else rebuilt offline (never downloaded) from the o200k_base vocabulary
  that the ``quicktok-v1`` package ships, checked against the SHA-256 that tiktoken itself checks.
* :func:`fertility` measures what a tokenizer costs on a text: tokens per word, characters per token.
* :func:`extend_tokenizer` learns new BPE merges on the target-language text, *continuing* gpt-oss's
  own merges: each new token gets an id from 201,088 up and a merge appended after all the base merges,
  so every base id keeps its meaning, text without the new pairs tokenizes exactly as before, and every
  new token is reachable: by its merge, or, for a whole word that no two existing tokens spell, by
  gpt-oss's whole-word lookup alone (its BPE looks a word up in the vocabulary before merging), so that
  token has no merge. (``add_tokens`` is wrong for byte-level BPE: see ../shared/FACTS.md.)
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import io
import json
import shutil
import struct
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langkit.utils import (
    atomic_write_text,
    cache_dir,
    get_logger,
    progress,
    replace_dir,
    sha256_file,
    temp_dir,
    write_json,
)

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
    tmp = temp_dir(out_dir)
    tok.save_pretrained(tmp)
    return replace_dir(tmp, out_dir)


def offline_tokenizer_dir() -> Path:
    """The rebuilt o200k_harmony tokenizer folder, built once and cached (about 5 s the first time)."""
    out = cache_dir() / OFFLINE_NAME
    if not (out / "tokenizer.json").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        log.info("rebuilding the gpt-oss tokenizer (o200k_harmony) offline from quicktok-v1 into %s", out)
        build_offline_tokenizer(out)
    return out


HUB_PROBE_TIMEOUT_S = 3.0
"""How long to wait for the Hub to accept a connection before a tokenizer that only the Hub has is given up
(instead of the Hugging Face client's retries with back-off, about 50 s offline)."""


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the Hub (``HF_ENDPOINT``) accepts a TCP connection within ``timeout`` seconds."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def load_base_tokenizer(name: str = "openai/gpt-oss-20b") -> Any:
    """The gpt-oss tokenizer, from the first place that has it, going to the network only for what cannot
    be had without it:

    1. ``name`` is a local folder holding a tokenizer (a downloaded model, or an earlier langkit output);
    2. ``name`` is a Hub id found in the local Hugging Face cache;
    3. ``name`` is a gpt-oss id (or ``o200k_harmony``): rebuilt offline from quicktok-v1 and cached, never
       downloaded. The rebuild is tested id for id against a reference encoder, so nothing is lost (to use
       the Hub's own files, download them into the cache first: ``hf download openai/gpt-oss-20b``);
    4. any other Hub id: from the Hub, unless ``HF_HUB_OFFLINE`` is set or the Hub does not accept a
       connection within :data:`HUB_PROBE_TIMEOUT_S`, in which case an ``OSError`` says so at once.
    """
    from huggingface_hub import constants
    from transformers import AutoTokenizer

    if Path(name).is_dir():
        return AutoTokenizer.from_pretrained(name)
    if name == OFFLINE_NAME:
        return AutoTokenizer.from_pretrained(str(offline_tokenizer_dir()))
    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        pass
    if name in GPT_OSS_HUB_IDS:
        return AutoTokenizer.from_pretrained(str(offline_tokenizer_dir()))
    where = f"tokenizer {name!r} is not a local folder and not in the Hugging Face cache"
    if constants.HF_HUB_OFFLINE:
        raise OSError(f"{where}, and the Hub is off (HF_HUB_OFFLINE); langkit rebuilds only gpt-oss's own "
                      "tokenizer offline")
    if not hub_reachable():
        raise OSError(f"{where}, and the Hub ({constants.ENDPOINT}) did not answer within "
                      f"{HUB_PROBE_TIMEOUT_S:g} s; langkit rebuilds only gpt-oss's own tokenizer offline")
    tokenizer = AutoTokenizer.from_pretrained(name)
    log.info("loaded tokenizer %s from the Hub", name)
    return tokenizer


# --------------------------------------------------------------------------------------------------
# Fertility: what a tokenizer costs on a text
# --------------------------------------------------------------------------------------------------


@dataclass
class Fertility:
    """What one tokenizer costs on one text. Words are whitespace-separated; bytes are UTF-8."""

    language: str
    path: str
    lines: int
    words: int
    characters: int
    bytes: int
    tokens: int
    split_words: int
    """Words (running, not distinct) that the tokenizer cuts into two tokens or more."""
    premium: float | None = None
    """Tokens per token of the aligned English (the "English premium"), on the line pairs where both sides
    hold text; measured against aligned French times :data:`FRA_PER_ENG_TOKENS` (or a measured factor) when
    no English is aligned (``premium_via``). None when neither is aligned."""
    premium_lines: int = 0
    """How many aligned line pairs ``premium`` rests on."""
    premium_via: str | None = None
    """None: measured against aligned English; ``fra_Latn``: measured against aligned French and converted
    with ``premium_factor`` French tokens per English token."""
    premium_factor: float | None = None
    """French tokens per English token used to convert a premium over French (see ``premium_via``)."""

    @property
    def tokens_per_word(self) -> float:
        return self.tokens / self.words if self.words else 0.0

    @property
    def chars_per_token(self) -> float:
        return self.characters / self.tokens if self.tokens else 0.0

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / self.tokens if self.tokens else 0.0

    @property
    def split_word_share(self) -> float:
        return self.split_words / self.words if self.words else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_word": round(self.tokens_per_word, 4),
                "chars_per_token": round(self.chars_per_token, 4),
                "bytes_per_token": round(self.bytes_per_token, 4),
                "split_word_share": round(self.split_word_share, 4)}


def read_lines(path: str | Path, keep_empty: bool = False) -> list[str]:
    """A plain-text file, one segment per line: NFC, surrounding whitespace stripped, empty lines
    skipped (or kept, to stay aligned with a parallel file)."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x} at byte {column} of "
                         "the line); convert the file to UTF-8, e.g. iconv -f LATIN1 -t UTF-8") from None
    # Lines as a text file gives them (\n, \r\n or \r), not str.splitlines, which also splits at U+2028,
    # U+0085 and form feeds and would shift lines against an aligned file.
    lines = [unicodedata.normalize("NFC", line.strip()) for line in io.StringIO(text, newline=None)]
    return lines if keep_empty else [line for line in lines if line]


def normalize_lines(lines: Sequence[str], language: str, config: Any = None) -> list[str]:
    """The corpus stage's normalization for ``language`` (one normalizer for every stage, with the
    corpus config's rules when given), so that counts describe the text the model really sees."""
    from langkit.corpus.normalize import normalize_text

    return [normalize_text(line, language, config)[0] for line in lines]


def fertility(tokenizer: Any, lines: Sequence[str], language: str = "", path: str = "") -> Fertility:
    """Count lines, words, characters, bytes and tokens (no special tokens added), and the words cut
    into several tokens (each word tokenized as it appears mid-sentence, after a space)."""
    tokens = sum(len(ids) for ids in tokenizer(list(lines), add_special_tokens=False)["input_ids"]) if lines else 0
    word_counts = Counter(word for line in lines for word in line.split())
    distinct = list(word_counts)
    pieces = tokenizer([" " + w for w in distinct], add_special_tokens=False)["input_ids"] if distinct else []
    split = sum(word_counts[w] for w, ids in zip(distinct, pieces, strict=True) if len(ids) > 1)
    return Fertility(
        language=language, path=path, lines=len(lines), words=sum(word_counts.values()),
        characters=sum(len(line) for line in lines), bytes=sum(len(line.encode("utf-8")) for line in lines),
        tokens=tokens, split_words=split,
    )


FRA_PER_ENG_TOKENS = 1.335
"""gpt-oss's French tokens per English token on the same sentences (o200k_harmony on FLORES-200 dev, 997
normalized line pairs; 1.31 on Gospel verses, 1.34 on the UDHR, 1.38 on MediaWiki messages): turns a premium
measured against aligned French into one over English when no English is aligned. It holds for extensions
of gpt-oss's tokenizer too, since the pivot guard keeps French and English as they were."""

PIVOTS = ("eng_Latn", "fra_Latn")


def premium(tokenizer: Any, pairs: Sequence[tuple[str, str]], pivot: str = "eng_Latn",
            fra_per_eng: float = FRA_PER_ENG_TOKENS) -> tuple[float | None, int]:
    """Tokens of the text per token of its aligned English over ``pairs`` ((text, pivot text) line pairs; pairs
    with an empty side are skipped), and how many pairs that rests on. With ``pivot="fra_Latn"`` the pivot
    side is French, and the ratio is divided by ``fra_per_eng`` (French tokens per English token)."""
    if pivot not in PIVOTS:
        raise ValueError(f"premium is measured against eng_Latn or fra_Latn, not {pivot!r}")
    kept = [(text, other) for text, other in pairs if text.strip() and other.strip()]
    if not kept:
        return None, 0
    ids = tokenizer([line for pair in kept for line in pair], add_special_tokens=False)["input_ids"]
    tokens, pivot_tokens = sum(map(len, ids[0::2])), sum(map(len, ids[1::2]))
    if not pivot_tokens:
        return None, len(kept)
    ratio = tokens / pivot_tokens * (fra_per_eng if pivot == "fra_Latn" else 1.0)
    return round(ratio, 4), len(kept)


def set_premium(stats: Fertility, tokenizer: Any, aligned: Mapping[str, Sequence[tuple[str, str]]],
                fra_per_eng: float = FRA_PER_ENG_TOKENS) -> Fertility:
    """Fill ``stats.premium`` from ``aligned`` ({pivot language: (text, pivot text) pairs}): over English
    when English is aligned, else over French converted with ``fra_per_eng``."""
    for pivot in PIVOTS:
        if aligned.get(pivot):
            value, lines = premium(tokenizer, aligned[pivot], pivot, fra_per_eng)
            if value is not None:
                stats.premium, stats.premium_lines = value, lines
                stats.premium_via = None if pivot == "eng_Latn" else pivot
                stats.premium_factor = None if pivot == "eng_Latn" else fra_per_eng
                break
    return stats


def _aligned_partner(path: Path, count: int, candidates: Sequence[tuple[Path, list[str]]]) -> list[str] | None:
    """The lines of the candidate file aligned with ``path`` (``count`` lines, empty ones included): one with as
    many lines, preferring one with the same name up to its last suffix (``flores200.dev.wol`` and
    ``flores200.dev.eng``) in the same folder."""
    same = [(p, lines) for p, lines in candidates if len(lines) == count and p != path]
    if not same:
        return None
    named = [lines for p, lines in same if p.parent == path.parent and p.stem == path.stem]
    return named[0] if named else same[0][1]


def compare_tokenizers(
    tokenizers: Mapping[str, Any], files: Sequence[tuple[str, Path]], normalize: bool = True
) -> list[dict[str, Any]]:
    """:func:`fertility` of each tokenizer on each ``(language, path)`` file, side by side.

    With ``normalize``, each file first goes through its language's normalization (the corpus
    stage's rules), so the numbers describe what the model sees. A file is aligned with an English or
    French file among ``files`` that has as many lines (empty ones included; one with the same name up to
    the last suffix is preferred): its ``premium`` is its tokens per English token on the line pairs where
    both sides hold text (``premium_lines``), for the same tokenizer. Without aligned English, the premium
    over aligned French is converted to one over English with the French file's own premium when English
    aligned with the French is given too, else with :data:`FRA_PER_ENG_TOKENS` (``premium_via``).
    ``cut`` is the share of tokens each tokenizer saves on the file against the first one (the base, when
    it is listed first)."""
    texts = []
    for language, path in files:
        lines = read_lines(path, keep_empty=True)
        texts.append((language, Path(path), normalize_lines(lines, language) if normalize else lines))
    by_pivot = {pivot: [(path, lines) for language, path, lines in texts if language == pivot] for pivot in PIVOTS}
    rows = []
    for language, path, lines in texts:
        row: dict[str, Any] = {"language": language, "path": str(path), "tokenizers": {}}
        aligned: dict[str, list[tuple[str, str]]] = {}
        french_english: list[tuple[str, str]] = []
        if language != "eng_Latn":
            for pivot in PIVOTS:
                partner = _aligned_partner(path, len(lines), by_pivot[pivot]) if pivot != language else None
                if partner is not None:
                    aligned[pivot] = list(zip(lines, partner, strict=True))
                    if pivot == "fra_Latn":
                        english = _aligned_partner(path, len(lines), by_pivot["eng_Latn"])
                        french_english = list(zip(partner, english, strict=True)) if english else []
        for name, tokenizer in tokenizers.items():
            stats = fertility(tokenizer, [line for line in lines if line], language, str(path))
            # The French side's own premium over English, measured with this tokenizer when English is there.
            factor = premium(tokenizer, french_english)[0] if french_english else None
            set_premium(stats, tokenizer, aligned, factor or FRA_PER_ENG_TOKENS)
            row["tokenizers"][name] = stats.to_dict()
        first, *others = row["tokenizers"].values()
        first["cut"] = None
        for measured in others:
            measured["cut"] = round(1 - measured["tokens"] / first["tokens"], 4) if first["tokens"] else None
        rows.append(row)
    return rows


def plot_fertility(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """A bar chart of tokens per word, one group per file, one bar per tokenizer (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows[0]["tokenizers"]) if rows else []
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(rows)), 4))
    for i, name in enumerate(names):
        values = [row["tokenizers"][name]["tokens_per_word"] for row in rows]
        positions = [x + i * width for x in range(len(rows))]
        bars = ax.bar(positions, values, width, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(rows))])
    ax.set_xticklabels([f"{row['language']}\n{Path(row['path']).name}" for row in rows], fontsize=7)
    ax.set_ylabel("tokens per word")
    ax.set_title("The tokenization tax: tokens per word")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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


def parse_language_budgets(items: Iterable[str]) -> dict[str, int]:
    """``LANG=N`` arguments (``bci_Latn=1200``) -> {code: tokens}; the config checks the codes."""
    budgets = {}
    for item in items:
        code, _, n = item.partition("=")
        if not n.isdigit():
            raise ValueError(f"--language-budget {item!r} must look like LANG=N, e.g. bci_Latn=3000")
        budgets[code] = int(n)
    return budgets


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
    merge: tuple[str, str] | None
    """The two tokens this one merges, in the byte-level alphabet; None for a whole word that no two existing
    tokens spell, found only by gpt-oss's whole-word lookup (it needs no merge, and has none)."""
    base_ids: list[int]
    """The base-vocabulary ids this token replaces: what training averages to initialise its embedding."""
    frequency: int
    """How often the merge applied in the training text when it was learned."""
    language: str = ""
    """The language whose share of the budget paid for this token (``all`` when the budget is pooled)."""


SENTENCEPIECE_VOCAB_SIZE = 8000
"""Least vocabulary of the per-language SentencePiece model in ``mode="sentencepiece"`` (with a budget of
1,000, the units of an 8,000-piece model gave 0.3-0.6 point more cut than a 1,000-piece one)."""


def word_count_discount(counts: Iterable[int]) -> float:
    """What to subtract from a word's count when its own token is weighed against a pair merge: a word
    seen c times in training recurs less often in new text than c says (absolute discounting, as in n-gram
    language models). The discount is estimated from the word counts themselves as Ney, Essen and Kneser
    (1994) do, n1 / (n1 + 2 n2) with n1 and n2 the words seen once and twice (0.5 when there are none):
    0.56 (Baoulé) to 0.74 (Wolof) on our text. Against the fixed 0.5 used before (itself better than no
    discount, which lowered Swahili and Wolof), the held-out cut moved by at most 0.3 point (Lingala,
    Swahili and Wolof +0.1 trained on 80% of the text; on half of it Wolof +0.3, Swahili -0.2): the gain
    is that no number is tuned by hand."""
    seen = Counter(c for c in counts if c <= 2)
    return seen[1] / (seen[1] + 2 * seen[2]) if seen[1] + seen[2] else 0.5


class _PairIndex:
    """Pair statistics over a bag of words (each a list of token ids), kept up to date as pairs merge.

    Counts are kept per language, so that each language can ask for its own most frequent pair (the
    balanced budget) while a merge, once chosen, applies to every language's words. ``occurrences``
    counts each new token in the current segmentation, to avoid merges that would swallow every
    occurrence of an earlier new token (such a token would never be produced). ``strings`` are the
    words as the tokenizer's vocabulary spells them: gpt-oss's BPE looks a whole word up in the
    vocabulary before merging (``ignore_merges``), so a word equal to a new token becomes that token
    whatever its merges, and the index does the same.
    """

    def __init__(self, words: list[list[int]], languages: list[int], counts: list[int], n_languages: int,
                 strings: list[str], spelling: Mapping[int, str]) -> None:
        self.words, self.languages, self.counts = words, languages, counts
        self.spelling = spelling  # token id -> its text in the vocabulary, new tokens included as they come
        self.raw: list[dict[tuple[int, int], int]] = [defaultdict(int) for _ in range(n_languages)]
        self.total: dict[tuple[int, int], int] = defaultdict(int)
        self.where: dict[tuple[int, int], set[int]] = defaultdict(set)
        self.occurrences: dict[int, int] = defaultdict(int)
        self.strings = strings
        self.by_string: dict[str, list[int]] = defaultdict(list)
        for w, string in enumerate(self.strings):
            self.by_string[string].append(w)
        for w, word in enumerate(words):
            self._add(w, word, +1)
        self.heaps = [[(-n, p) for p, n in raw.items()] for raw in self.raw]
        for heap in self.heaps:
            heapq.heapify(heap)
        # Whole-word candidates per language, by the tokens a single token for the word would save.
        self.word_heaps: list[list[tuple[int, int]]] = [[] for _ in range(n_languages)]
        for w in range(len(words)):
            self.push_word(w)

    def saving(self, w: int) -> int:
        """Tokens saved if word ``w`` became one token."""
        return self.counts[w] * (len(self.words[w]) - 1)

    def push_word(self, w: int) -> None:
        """(Re)enter word ``w`` among its language's whole-word candidates."""
        if len(self.words[w]) > 1:
            heapq.heappush(self.word_heaps[self.languages[w]], (-self.saving(w), w))

    def _add(self, w: int, word: list[int], sign: int) -> set[tuple[int, int]]:
        raw, count = self.raw[self.languages[w]], self.counts[w]
        touched = set()
        for pair in zip(word, word[1:], strict=False):
            raw[pair] += sign * count
            self.total[pair] += sign * count
            if sign > 0:
                self.where[pair].add(w)
            touched.add(pair)
        return touched

    def best(self, language: int, min_frequency: int, allowed: Callable[[tuple[int, int]], bool]) -> tuple[int, int] | None:
        """The most frequent pair of ``language`` that may be merged, or None when none is left. The pair
        is taken off the heap: :meth:`put_back` returns a pair that was not merged after all."""
        heap, raw = self.heaps[language], self.raw[language]
        while heap:
            neg, pair = heapq.heappop(heap)
            if raw.get(pair, 0) != -neg:
                continue  # stale: the pair was re-pushed with its current count
            if -neg < min_frequency:
                heap.clear()  # the heap is ordered: nothing frequent enough is left
                return None
            if not allowed(pair) or self.would_swallow(pair):
                continue
            return pair
        return None

    def put_back(self, language: int, pair: tuple[int, int]) -> None:
        heapq.heappush(self.heaps[language], (-self.raw[language][pair], pair))

    def best_word(self, language: int, min_frequency: int,
                  spell: Callable[[int], list[tuple[int, int]] | None]) -> tuple[int, list[tuple[int, int]]] | None:
        """The word of ``language`` whose own token would save the most tokens and that ``spell`` allows:
        (word, what ``spell`` returned: its spelling merge, or none), or None. Taken off the heap like
        :meth:`best` (:meth:`push_word` puts it back)."""
        heap = self.word_heaps[language]
        while heap:
            neg, w = heapq.heappop(heap)
            if self.saving(w) != -neg or self.counts[w] < min_frequency:
                continue  # stale (re-pushed when its segmentation changed), or too rare
            merges = spell(w)
            if merges is not None:
                return w, merges
        return None

    def would_swallow(self, pair: tuple[int, int]) -> bool:
        """True when merging ``pair`` could consume every occurrence of a new token (which would then never
        be produced): the merge everywhere, then the whole-word lookup of the words the merge spells.
        Overlapping pairs (``aaa``) are counted as if all merged: the check errs on the side of refusing."""
        string = self.spelling[pair[0]] + self.spelling[pair[1]]
        used = self._used_by_lookup(string)
        merged_elsewhere = self.total.get(pair, 0) - sum(
            self.counts[w] * sum(p == pair for p in zip(self.words[w], self.words[w][1:], strict=False))
            for w in self.by_string.get(string, ()))
        for t in pair:
            used[t] += merged_elsewhere
        return self._strands(used)

    def _used_by_lookup(self, string: str) -> dict[int, int]:
        """Occurrences of each token that the words spelled ``string`` give up on becoming one token."""
        used: dict[int, int] = defaultdict(int)
        for w in self.by_string.get(string, ()):
            for t in self.words[w]:
                used[t] += self.counts[w]
        return used

    def _strands(self, used: Mapping[int, int]) -> bool:
        """True when giving up ``used`` ({token: occurrences}) leaves some new token with none."""
        return any(t in self.occurrences and self.occurrences[t] <= n for t, n in used.items())

    def _resegment(self, w: int, merged: list[int], touched: set[tuple[int, int]]) -> None:
        touched |= self._add(w, self.words[w], -1)
        self.words[w] = merged
        touched |= self._add(w, merged, +1)
        self.push_word(w)

    def _refresh(self, touched: set[tuple[int, int]]) -> None:
        for p in touched:
            if self.total.get(p, 0) <= 0:
                self.total.pop(p, None)
                self.where.pop(p, None)
            for language, raw in enumerate(self.raw):
                if p in raw:
                    if raw[p] <= 0:
                        del raw[p]
                    else:
                        heapq.heappush(self.heaps[language], (-raw[p], p))

    def word_token_would_strand(self, string: str) -> bool:
        """True when giving the words spelled ``string`` their own token would consume every occurrence of
        an earlier new token (which would then never be produced)."""
        return self._strands(self._used_by_lookup(string))

    def merge(self, pair: tuple[int, int] | None, new_id: int) -> int:
        """Replace ``pair`` by ``new_id`` in every word holding it (left to right, as BPE does), then
        every word spelled as the new token (``spelling[new_id]``) by ``new_id`` alone. With no pair, only
        the second part: the token of a whole word, found by the lookup. Returns how many tokens that saves."""
        applied = 0
        touched: set[tuple[int, int]] = set()
        for w in sorted(self.where.pop(pair, ()) if pair is not None else ()):
            word = self.words[w]
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
                    merged.append(new_id)
                    applied += self.counts[w]
                    for t in pair:
                        if t in self.occurrences:
                            self.occurrences[t] -= self.counts[w]
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            self._resegment(w, merged, touched)
        self.occurrences[new_id] += applied
        for w in self.by_string.get(self.spelling[new_id], ()):  # gpt-oss's BPE looks whole words up first
            if self.words[w] != [new_id]:
                applied += self.saving(w)
                for t in self.words[w]:
                    if t in self.occurrences:
                        self.occurrences[t] -= self.counts[w]
                self.occurrences[new_id] += self.counts[w]
                self._resegment(w, [new_id], touched)
        self._refresh(touched)
        return applied


def _backend_json(tokenizer: Any) -> dict[str, Any]:
    return json.loads(tokenizer.backend_tokenizer.to_str())


PIVOT_TEXT_RATIO = 0.03
"""A pair or word that the corpus's pivot text uses at this share or more of the rate (per token) at which
the target languages use it belongs to the pivots too, and the pivot guard refuses it (see
:meth:`PivotGuard.with_text`). Words of the target languages that turn up in a French sentence now and then
stay far below it; the names and markup that aligned texts share are near 1."""


@dataclass
class PivotGuard:
    """What the extension must not touch so that English and French tokenize as before: adjacent token
    pairs inside the base tokenization of pivot words (a merge of such a pair would re-segment the
    word), and the words themselves (a new token spelling a whole pivot word would be taken for it
    directly, since gpt-oss's BPE looks whole words up before merging).

    Built from frequency lists, the guard weighs each pair and word by how much running pivot text it
    touches (the summed frequency of the pivot words holding it) and protects those above a
    ``tolerance``: the long tail of the lists holds names and borrowings that also live in the target
    languages (and any word at all is in it somewhere), and protecting all of them costs far more
    target-language tokens than the pivot text they stand for.

    The frequency lists miss what a corpus shares with its own pivot side: the names of its news (a
    Swahili story about Museveni has an English one about him) and the markup of its interface messages.
    As the budget grows the extension reaches down to exactly those strings, which is why, with the lists
    alone, English and French lines change more at 32,000 new tokens than at 8,000. :meth:`with_text`
    adds the pivot text that comes with the corpus (the aligned side of its pairs): a pair or word that
    this text uses at :data:`PIVOT_TEXT_RATIO` or more of the rate at which the target languages use it is
    the pivots' too, and is refused."""

    pairs: set[tuple[int, int]]
    words: set[str]
    text_pairs: dict[tuple[int, int], int] = field(default_factory=dict)
    """Adjacent token pairs inside the words of the pivot text (base tokenization) -> occurrences."""
    text_words: dict[str, int] = field(default_factory=dict)
    """Pre-tokenized pieces of the pivot text that hold a letter -> occurrences."""
    text_tokens: int = 0
    """Base tokens in those pieces: the denominator of the pivot text's rates."""

    def with_text(self, tokenizer: Any, lines: Iterable[str]) -> PivotGuard:
        """This guard plus the pair and word counts of ``lines`` of pivot text (any pivot language). Lines that
        the corpus stage's built-in identifier takes for a target language are left out: aligned files hold
        segments left untranslated (MAFAND's French side has Wolof lines), and their words are not the
        pivots'."""
        from langkit.corpus.langid import FunctionWordIdentifier
        from langkit.languages import TARGET_LANGUAGES

        identifier = FunctionWordIdentifier()
        backend = tokenizer.backend_tokenizer
        pieces: Counter[str] = Counter()
        for line in lines:
            if identifier.predict(line)[0] in TARGET_LANGUAGES:
                continue
            for piece, (start, end) in backend.pre_tokenizer.pre_tokenize_str(line):
                if _has_letter(line[start:end]):
                    pieces[piece] += 1
        pairs: Counter[tuple[int, int]] = Counter(self.text_pairs)
        words: Counter[str] = Counter(self.text_words)
        tokens = self.text_tokens
        for piece, n in pieces.items():
            ids = [t.id for t in backend.model.tokenize(piece)]
            words[piece] += n
            tokens += n * len(ids)
            for pair in zip(ids, ids[1:], strict=False):
                pairs[pair] += n
        return PivotGuard(self.pairs, self.words, dict(pairs), dict(words), tokens)

    def text_refuses(self, pivot_count: int, target_count: int, target_tokens: int) -> bool:
        """True when the pivot text uses a pair or word (``pivot_count`` times) at :data:`PIVOT_TEXT_RATIO` or
        more of the rate at which the target text uses it (``target_count`` in ``target_tokens``)."""
        if not pivot_count or not self.text_tokens:
            return False
        return pivot_count / self.text_tokens >= PIVOT_TEXT_RATIO * target_count / max(1, target_tokens)

    # How a listed word appears in running text: after a space or at the start of a line, in lower case,
    # capitalised (sentence starts, and names: the lists spell them in lower case) and in capitals; and
    # for a word starting with a vowel or h, after an elided French article or pronoun (l'école gives the
    # piece "'école"). Each form counts with the word's whole frequency: a safe overestimate.
    FORMS = (" {w}", "{w}", " {c}", "{c}", " {u}", "{u}")
    ELIDED = "'{w}"
    # Names: every word of the lists, whatever its frequency, capitalised (as a name is written).
    NAME_FORMS = (" {c}", "{c}")

    @classmethod
    def weigh(cls, tokenizer: Any, frequencies: Mapping[str, float], floor: float = 0.0,
              forms_only: Sequence[str] | None = None) -> tuple[dict[tuple[int, int], float], dict[str, float]]:
        """For each token pair inside a word form and each pre-tokenized piece of one, the summed share of
        running text of the words in ``frequencies`` ({word: share}) whose forms hold it. Words rarer than
        ``floor`` are left out (they cannot add up to much, and skipping them is faster). ``forms_only``
        replaces :attr:`FORMS` and the elided form with these templates."""
        backend = tokenizer.backend_tokenizer
        forms: dict[str, float] = defaultdict(float)
        for word, frequency in frequencies.items():
            if frequency < floor:
                continue
            cases = {"w": word, "c": word.capitalize(), "u": word.upper()}
            templates = tuple(forms_only) if forms_only is not None else (
                cls.FORMS + ((cls.ELIDED,) if word[:1] in "aeiouhâàéèêîôûœ" else ()))
            for text in {template.format(**cases) for template in templates}:
                forms[text] += frequency
        pair_weight: dict[tuple[int, int], float] = defaultdict(float)
        word_weight: dict[str, float] = defaultdict(float)
        texts = list(forms)
        # One batched call (the tokenizer's own threads); pieces are told apart by their word index.
        for encoding, weight in zip(backend.encode_batch(texts, add_special_tokens=False), forms.values(), strict=True):
            ids = encoding.ids
            if len(ids) == 1:
                continue  # a base token already: nothing to merge, and no new token can spell it
            piece_tokens: dict[int, list[int]] = defaultdict(list)
            for position, index in enumerate(encoding.word_ids):
                piece_tokens[-1 if index is None else index].append(position)
            for positions in piece_tokens.values():
                word_weight["".join(encoding.tokens[i] for i in positions)] += weight
                for pair in {(ids[i], ids[j]) for i, j in zip(positions, positions[1:], strict=False)}:
                    pair_weight[pair] += weight
        return pair_weight, word_weight

    @classmethod
    def from_words(cls, tokenizer: Any, words: Iterable[str]) -> PivotGuard:
        """Protect every one of ``words``, whatever its frequency."""
        pair_weight, word_weight = cls.weigh(tokenizer, dict.fromkeys(words, 1.0))
        return cls(set(pair_weight), set(word_weight))

    @classmethod
    def from_frequencies(cls, tokenizer: Any, frequencies: Mapping[str, float], tolerance: float) -> PivotGuard:
        """Protect what the words of ``frequencies`` ({word: share of running text}) hold more than
        ``tolerance`` of the time, summed over the words."""
        pair_weight, word_weight = cls.weigh(tokenizer, frequencies, floor=tolerance / 20)
        return cls({pair for pair, weight in pair_weight.items() if weight > tolerance},
                   {piece for piece, weight in word_weight.items() if weight > tolerance})

    @classmethod
    def build(cls, tokenizer: Any, languages: Sequence[str] = ("eng_Latn", "fra_Latn"), top_n: int = 50_000,
              tolerance: float = 1e-6, names: bool = True) -> PivotGuard:
        """Protect what the ``top_n`` most frequent words of each pivot language use more than
        ``tolerance`` of the time (shares of running text, from the frequency lists that the wordfreq
        package carries; read offline, nothing of them is copied into langkit). With ``names``, also every
        word of the whole lists capitalised, whatever its frequency: names travel between languages (an
        English news story about Tanzania names Chama cha Mapinduzi, Mwananchi and HakiElimu as the Swahili
        one does), and the rare tail of the lists is where they are. Lower-case words of the target
        languages that the lists also hold keep their own tokens."""
        import wordfreq

        from langkit.languages import get_language

        # The guard takes ~10-20 s to weigh (about a minute with names); it depends only on the tokenizer,
        # the lists and the settings, so it is kept in the cache, named by a hash of all of them.
        key = hashlib.sha256(json.dumps(
            [tokenizer.backend_tokenizer.to_str(), list(languages), top_n, tolerance, cls.FORMS, cls.ELIDED,
             getattr(wordfreq, "__version__", "")] + ([cls.NAME_FORMS] if names else [])).encode()).hexdigest()[:16]
        cached = cache_dir() / "pivot-guard" / f"{key}.json"
        if cached.exists():
            stored = json.loads(cached.read_text("utf-8"))
            guard = cls({(a, b) for a, b in stored["pairs"]}, set(stored["words"]))
            log.info("pivot guard (cached): %d protected word forms, %d protected pairs", len(guard.words), len(guard.pairs))
            return guard
        pairs: set[tuple[int, int]] = set()
        pieces: set[str] = set()
        for code in languages:
            lang = get_language(code).iso639_1 or code
            frequency = wordfreq.get_frequency_dict(lang)
            listed = {word: frequency.get(word, 0.0) for word in wordfreq.top_n_list(lang, top_n)}
            guard = cls.from_frequencies(tokenizer, listed, tolerance)
            pairs |= guard.pairs
            pieces |= guard.words
            if names:
                name_pairs, name_pieces = cls.weigh(tokenizer, dict.fromkeys(frequency, 1.0), forms_only=cls.NAME_FORMS)
                pairs |= set(name_pairs)
                pieces |= set(name_pieces)
        log.info("pivot guard: %d protected word forms, %d protected pairs", len(pieces), len(pairs))
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cached, json.dumps({"pairs": sorted(pairs), "words": sorted(pieces)}, ensure_ascii=False))
        return cls(pairs, pieces)


def sentencepiece_segments(lines: Sequence[str], vocab_size: int) -> list[str]:
    """The pieces a SentencePiece unigram model trained on ``lines`` cuts them into, as text (a piece
    that starts a word keeps its leading space). SentencePiece refuses a vocabulary larger than the
    text supports, so the size is lowered until it trains."""
    import sentencepiece as spm

    size = vocab_size
    while True:
        buffer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=buffer, vocab_size=size, model_type="unigram",
                character_coverage=1.0, normalization_rule_name="identity", split_digits=True,
                minloglevel=2, num_threads=1, hard_vocab_limit=False,  # one thread: same pieces every run
            )
            break
        except RuntimeError as err:
            if size <= 16:
                raise ValueError(f"SentencePiece could not train on {len(lines)} lines: {err}") from None
            size //= 2
    processor = spm.SentencePieceProcessor(model_proto=buffer.getvalue())
    segments = []
    for line in lines:
        for i, piece in enumerate(processor.encode(line, out_type=str)):
            text = piece.replace("\u2581", " ")
            segments.append(text[1:] if i == 0 and text.startswith(" ") and not line.startswith(" ") else text)
    return segments


def _has_letter(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


def learn_merges(
    tokenizer: Any,
    texts: Mapping[str, Sequence[str]],
    budget: int,
    min_frequency: int = 2,
    *,
    balance: str = "equal",
    language_budgets: Mapping[str, int] | None = None,
    guard: PivotGuard | None = None,
    words_only: bool = True,
    mode: str = "bpe",
    whole_words: bool = True,
) -> tuple[list[NewToken], dict[str, Any]]:
    """Learn up to ``budget`` new merges from ``texts`` ({language: lines}) continuing the tokenizer's BPE.

    ``balance`` shares the budget between languages: ``equal`` gives each language the same share
    (so a small Baoulé corpus is not crowded out by a large Swahili one), ``proportional`` shares by
    token count, ``relative`` gives each merge to the language whose own token count it cuts by the
    largest fraction, ``none`` pools all text (plain continued BPE). ``language_budgets`` fixes some
    languages' shares in tokens; the others split the rest. Each step, the language furthest below its
    share picks its most frequent pair; the merge then applies to every language. ``words_only`` learns
    merges inside words only (never in numbers, punctuation or whitespace runs, which all languages
    share). ``mode="sentencepiece"`` first trains a SentencePiece unigram model per language and learns
    merges only inside the pieces it proposes (morpheme-like units), so that the new tokens follow its
    segmentation; the merges are ordinary BPE merges either way. ``whole_words`` lets a step give a word
    its own token instead, when that saves more (gpt-oss's BPE looks a whole word up in the vocabulary
    before merging, so the word needs no chain of intermediate tokens): through one merge of two existing
    tokens that spell it, which also applies wherever those two tokens meet, or, when no two tokens
    spell it, with no merge at all (the lookup alone finds it). A step that would leave
    an earlier new token with no occurrence in the text is refused, so every new token is produced.
    Returns the new tokens (ids from ``len(tokenizer)`` up) and the extended ``tokenizer.json``.
    """
    backend = tokenizer.backend_tokenizer
    data = _backend_json(tokenizer)
    model = data["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"can only extend a BPE tokenizer, this one is {model.get('type')}")
    if balance not in {"equal", "proportional", "relative", "none"}:
        raise ValueError(f"balance must be equal, proportional, relative or none, got {balance!r}")
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
    pooled = {"all": [line for lines in texts.values() for line in lines]} if balance == "none" else texts
    names = list(pooled)
    word_counts: Counter[tuple[int, str]] = Counter()
    if mode not in {"bpe", "sentencepiece"}:
        raise ValueError(f"mode must be bpe or sentencepiece, got {mode!r}")
    for lang_i, language in enumerate(names):
        lines = pooled[language]
        segments: Iterable[str] = lines
        if mode == "sentencepiece":
            # The unigram vocabulary sets how long the units are, not how many merges are learned: a small
            # budget still wants whole morphemes to merge inside (SentencePiece caps the size at what the
            # text supports).
            segments = sentencepiece_segments(lines, vocab_size=max(budget, SENTENCEPIECE_VOCAB_SIZE))
        for segment in progress(segments, desc=f"pre-tokenizing {language}"):
            for piece, (start, end) in backend.pre_tokenizer.pre_tokenize_str(segment):
                if not words_only or _has_letter(segment[start:end]):
                    word_counts[(lang_i, piece)] += 1
    encoded: dict[str, list[int]] = {}
    words, languages, counts, strings = [], [], [], []
    language_tokens = [0] * len(names)
    for (lang_i, piece), count in word_counts.items():
        if piece not in encoded:
            encoded[piece] = [t.id for t in backend.model.tokenize(piece)]
        words.append(list(encoded[piece]))
        languages.append(lang_i)
        counts.append(count)
        strings.append(piece if mode == "bpe" else "")  # SentencePiece pieces are never looked up whole
        language_tokens[lang_i] += count * len(encoded[piece])

    # Each language's share of the budget.
    fixed = {names.index(k): v for k, v in (language_budgets or {}).items() if k in names}
    rest = [i for i in range(len(names)) if i not in fixed]
    left = max(0, budget - sum(fixed.values()))
    share = [0.0] * len(names)
    for i in rest:
        share[i] = left * (language_tokens[i] / max(1, sum(language_tokens[j] for j in rest))
                           if balance == "proportional" else 1 / len(rest))
    for i, n in fixed.items():
        share[i] = float(n)

    banned_pairs = guard.pairs if guard else set()
    banned_words = guard.words if guard else set()
    refused: set[tuple[int, int]] = set()
    target_tokens = sum(language_tokens)
    word_total: Counter[str] = Counter()
    for string, count in zip(strings, counts, strict=True):
        word_total[string] += count

    def pivot_pair(pair: tuple[int, int]) -> bool:
        """The pivot guard protects ``pair``: from the frequency lists, or because the corpus's pivot text
        uses it about as much as the target languages do (counts only fall as merges go on, so a refusal
        stays right)."""
        if pair in banned_pairs:
            return True
        return guard is not None and guard.text_refuses(guard.text_pairs.get(pair, 0), pair_stats.total.get(pair, 0),
                                                        target_tokens)

    def pivot_word(string: str) -> bool:
        """The pivot guard protects the whole word ``string`` (the same two ways)."""
        if string in banned_words:
            return True
        return guard is not None and guard.text_refuses(guard.text_words.get(string, 0), word_total[string],
                                                        target_tokens)

    def allowed(pair: tuple[int, int]) -> bool:
        if pair in refused:
            return False
        merged = id_to_token[pair[0]] + id_to_token[pair[1]]
        # Already a base token (BPE reaches it another way: a second id would be ambiguous), or a
        # whole pivot word (it would be looked up directly and change the pivot's tokenization).
        if merged in vocab or pivot_pair(pair) or pivot_word(merged):
            refused.add(pair)
            return False
        return True

    # In SentencePiece mode the "words" are pieces of words: the whole-word lookup never sees them whole.
    whole_words = whole_words and mode == "bpe"
    pair_stats = _PairIndex(words, languages, counts, len(names), strings, id_to_token)
    discounts = [word_count_discount(n for n, lang_i in zip(counts, languages, strict=True) if lang_i == i)
                 for i in range(len(names))]

    def spelling_merge(w: int) -> list[tuple[int, int]] | None:
        """How word ``w`` gets its own token (found by the whole-word lookup): ``[pair]``, a merge of two
        existing tokens that spells it, preferring a cut between the tokens it is segmented into now (the
        merge then also applies wherever the two meet); ``[]`` when no two tokens spell it (the lookup
        alone finds it: no merge); None when it may not have one (a base token or pivot word already, or
        an earlier new token would never be produced again)."""
        string = strings[w]
        if string in vocab or pivot_word(string):
            return None
        cuts, at = [], 0
        for t in pair_stats.words[w][:-1]:
            at += len(id_to_token[t])
            cuts.append(at)
        for cut in cuts + [c for c in range(1, len(string)) if c not in cuts]:
            left, right = vocab.get(string[:cut]), vocab.get(string[cut:])
            if (left is not None and right is not None and not pivot_pair((left, right))
                    and not pair_stats.would_swallow((left, right))):
                return [(left, right)]
        return None if pair_stats.word_token_would_strand(string) else []

    Step = tuple[tuple[int, int] | None, float, int | None]

    def propose(i: int) -> Step | None:
        """Language ``i``'s best step as (merge or None, tokens it saves in language ``i``, word or None): a
        pair merge (saves its frequency) or, with ``whole_words``, a word's own token (saves the word's
        frequency times its tokens minus one), whichever saves more. A word's count is discounted by its
        language's :func:`word_count_discount` in that comparison: a word seen c times in the training text
        recurs less often in new text than c suggests, while a pair sums many words and also serves unseen
        ones. The loser goes back on its heap."""
        pair = pair_stats.best(i, min_frequency, allowed)
        spelled = pair_stats.best_word(i, min_frequency, spelling_merge) if whole_words else None
        pair_gain = pair_stats.raw[i][pair] if pair is not None else 0
        word_gain = 0.0
        if spelled is not None:
            w = spelled[0]
            word_gain = (pair_stats.counts[w] - discounts[i]) * (len(pair_stats.words[w]) - 1)
        if pair is not None and pair_gain >= word_gain:
            if spelled is not None:
                pair_stats.push_word(spelled[0])
            return pair, pair_gain, None
        if spelled is not None:
            if pair is not None:
                pair_stats.put_back(i, pair)
            w, merges = spelled
            return (merges[0] if merges else None), word_gain, w
        return None

    def put_back(i: int, step: Step) -> None:
        if step[2] is None:
            assert step[0] is not None  # a pair step always has its pair
            pair_stats.put_back(i, step[0])
        else:
            pair_stats.push_word(step[2])

    base_ids: dict[int, list[int]] = {}
    charged = [0] * len(names)
    active = {i for i in range(len(names)) if share[i] > 0}
    new_tokens: list[NewToken] = []
    while len(new_tokens) < budget and active:
        if balance == "relative":
            # Every language proposes its best step; the one that cuts its own language's token count
            # by the largest fraction wins, the others go back on their heaps.
            proposals = {}
            for i in sorted(active):
                proposal = propose(i)
                if proposal is None:
                    active.discard(i)
                else:
                    proposals[i] = proposal
            if not proposals:
                break
            chooser = max(proposals, key=lambda i: (proposals[i][1] / language_tokens[i], -i))
            for i, proposal in proposals.items():
                if i != chooser:
                    put_back(i, proposal)
            step = proposals[chooser]
        else:
            chooser = min(active, key=lambda i: (charged[i] / share[i], i))
            if chooser in fixed and charged[chooser] >= share[chooser]:
                active.discard(chooser)  # a fixed share is a ceiling; equal shares grow as others run dry
                continue
            found = propose(chooser)
            if found is None:
                active.discard(chooser)
                continue
            step = found
        new_id = first_new_id + len(new_tokens)
        pair, _, word = step
        merge: tuple[str, str] | None = None
        if word is None:
            assert pair is not None
            token_base_ids = base_ids.get(pair[0], [pair[0]]) + base_ids.get(pair[1], [pair[1]])
        else:
            # The word's own token: reached by the whole-word lookup, and by its spelling merge (if it has
            # one) wherever those two tokens meet. Its embedding starts from the base tokens it replaces.
            token_base_ids = list(encoded[strings[word]])
        if pair is not None:
            merge = (id_to_token[pair[0]], id_to_token[pair[1]])
            model["merges"].append(list(merge))
            merged = "".join(merge)
        else:
            assert word is not None  # only a word's own token comes without a merge
            merged = strings[word]
        vocab[merged] = new_id
        id_to_token[new_id] = merged
        frequency = pair_stats.merge(pair, new_id)
        base_ids[new_id] = token_base_ids
        charged[chooser] += 1
        new_tokens.append(
            NewToken(
                id=new_id, token=merged, text=tokenizer.decode(token_base_ids), merge=merge,
                base_ids=token_base_ids, frequency=frequency, language=names[chooser],
            )
        )
    log.info("learned %d new merges (budget %d; %s) from %d distinct words", len(new_tokens), budget,
             ", ".join(f"{n} {c}" for n, c in zip(names, charged, strict=True)), len(encoded))
    return new_tokens, data


def extend_with_config(
    tokenizer: Any, texts: Mapping[str, Sequence[str]], config: Any, out_dir: str | Path, normalize_config: Any = None,
    sources: Sequence[tuple[str, str | Path]] = (),
    pivot_texts: Mapping[str, Sequence[str]] | None = None,
) -> tuple[Any, list[NewToken]]:
    """Extend ``tokenizer`` as a :class:`langkit.config.TokenizerConfig` says: the text normalized by each
    language's rules (``normalize_config``: the corpus stage's, or the defaults), the pivot guard, the
    budget shared by ``balance``. One path for the pipeline stage, ``langkit tokenizer extend`` and the
    benchmark, so they all learn the same tokens from the same text.

    Next to the tokenizer, ``extension.json`` records how it was made, so that it can be made again: the
    settings, the new tokens by the share that paid for them, each language's lines and a digest of the
    (normalized) text it learned from, and the ``sources`` files ((language, path) pairs) with their SHA-256.

    ``pivot_texts`` ({eng_Latn or fra_Latn: lines}) is the pivot side that comes with the text (the aligned
    English or French of its pairs): the pivot guard also protects what it uses about as much as the target
    languages do (:meth:`PivotGuard.with_text`)."""
    started = time.perf_counter()
    pivot_texts = {lang: list(lines) for lang, lines in (pivot_texts or {}).items() if lines}
    if config.normalize:
        texts = {lang: normalize_lines(lines, lang, normalize_config) for lang, lines in texts.items()}
        pivot_texts = {lang: normalize_lines(lines, lang, normalize_config) for lang, lines in pivot_texts.items()}
    guard = (PivotGuard.build(tokenizer, top_n=config.pivot_guard_words, tolerance=config.pivot_guard_tolerance)
             if config.pivot_guard else None)
    if guard is not None and pivot_texts:
        guard = guard.with_text(tokenizer, (line for lines in pivot_texts.values() for line in lines))

    def describe(new_tokens: list[NewToken]) -> dict[str, Any]:
        learned = Counter(t.language for t in new_tokens)
        return {
            "base": config.base,
            "base_vocabulary": len(tokenizer),
            "vocabulary": len(tokenizer) + len(new_tokens),
            "settings": asdict(config),
            "new_tokens": {"total": len(new_tokens), **dict(sorted(learned.items()))},  # by the share that paid
            "languages": {
                lang: {"lines": len(lines),
                       "text_sha256": hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()}
                for lang, lines in sorted(texts.items())
            },
            "pivot_text": {  # what the pivot guard read besides the frequency lists
                lang: {"lines": len(lines),
                       "text_sha256": hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()}
                for lang, lines in sorted(pivot_texts.items())
            } if guard is not None else {},
            "sources": [{"language": lang, "path": str(path), "sha256": sha256_file(path)} for lang, path in sources],
            "seconds": round(time.perf_counter() - started, 1),
        }

    return extend_tokenizer(
        tokenizer, texts, config.budget, out_dir, config.min_frequency, balance=config.balance,
        language_budgets=dict(config.language_budgets), guard=guard, words_only=config.words_only, mode=config.mode,
        whole_words=config.whole_words, describe=describe,
    )


def extend_tokenizer(
    tokenizer: Any,
    texts: Mapping[str, Sequence[str]],
    budget: int,
    out_dir: str | Path,
    min_frequency: int = 2,
    *,
    describe: Callable[[list[NewToken]], Mapping[str, Any]] | None = None,
    **options: Any,
) -> tuple[Any, list[NewToken]]:
    """Extend ``tokenizer`` with merges learned on ``texts`` and save it to ``out_dir``: a Hugging Face
    tokenizer folder (tokenizer.json, config, special tokens, harmony chat template) plus
    ``new_tokens.json`` next to it listing each new token with its base ids, and ``extension.json`` with
    what ``describe`` says of the new tokens. The folder is written beside ``out_dir`` and swapped in
    whole; an existing ``out_dir`` must hold nothing but an earlier tokenizer. ``options`` go to
    :func:`learn_merges` (balance, language_budgets, guard, words_only)."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():  # said before the minutes of learning, not after
        raise ValueError(f"{out_dir} is a file: give a folder (new, empty, or an earlier tokenizer)")
    new_tokens, data = learn_merges(tokenizer, texts, budget, min_frequency, **options)
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
    tmp = temp_dir(out_dir)
    try:
        extended.save_pretrained(tmp)
        write_json(tmp / "new_tokens.json", [asdict(t) for t in new_tokens])
        if describe is not None:
            write_json(tmp / "extension.json", describe(new_tokens))
        # The swap replaces the whole folder: refuse one that holds anything a tokenizer folder does not.
        written = {p.name for p in tmp.iterdir()} | {"extension.json"}
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in written) if out_dir.is_dir() else []
        if foreign:
            raise ValueError(f"{out_dir} holds files that are not a tokenizer's ({', '.join(foreign[:5])}); "
                             "write the tokenizer to a new or empty folder, or over an earlier tokenizer")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return AutoTokenizer.from_pretrained(str(out_dir)), new_tokens


def load_new_tokens(path: str | Path) -> list[NewToken]:
    """Read the ``new_tokens.json`` written by :func:`extend_tokenizer`."""
    return [NewToken(**{**item, "merge": tuple(item["merge"]) if item["merge"] else None})
            for item in json.loads(Path(path).read_text("utf-8"))]


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


def _aligned_pairs(parquets: Iterable[Path]) -> dict[str, dict[str, list[tuple[str, str]]]]:
    """{language: {pivot language: [(text, pivot text)]}} from the records of ``parquets`` that have a pivot."""
    import pyarrow.parquet as pq

    pairs: dict[str, dict[str, list[tuple[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for parquet in parquets:
        table = pq.read_table(parquet, columns=["language", "text", "pivot_language", "pivot_text"]).to_pydict()
        for language, text, pivot, pivot_text in zip(table["language"], table["text"], table["pivot_language"],
                                                     table["pivot_text"], strict=True):
            if language and text and pivot and pivot_text:
                pairs[language][pivot].append((text, pivot_text))
    return {language: dict(by_pivot) for language, by_pivot in pairs.items()}


def _normalize_pairs(pairs: Mapping[str, Sequence[tuple[str, str]]], language: str, normalize_config: Any
                     ) -> dict[str, list[tuple[str, str]]]:
    if not normalize_config:
        return {pivot: list(items) for pivot, items in pairs.items()}
    return {pivot: list(zip(normalize_lines([a for a, _ in items], language, normalize_config),
                            normalize_lines([b for _, b in items], pivot, normalize_config), strict=True))
            for pivot, items in pairs.items()}


def run(cfg: Any, run_dir: Any) -> Path:
    """Extend the base tokenizer with merges learned on the corpus's train split, and measure both
    tokenizers on the text the extension did not learn from: ``stats.json`` and a bar chart
    ``fertility.png``.

    Fertility and cut are measured on the dev and test splits together (the target languages and their
    pivots). The English premium of both tokenizers is measured on the aligned pairs of those splits, and
    the base tokenizer's also on every aligned pair of the corpus (it learned from none of them), each
    with the number of line pairs it rests on."""
    train_split = run_dir.require(run_dir.split("train"), "corpus")
    test_split = run_dir.require(run_dir.split("test"), "corpus")
    held_splits = [split for split in (run_dir.split("dev"), test_split) if split.exists()]
    normalize_config = cfg.corpus.normalize if cfg.tokenizer.normalize else None
    texts = {lang: lines for lang, lines in _texts_by_language(train_split, "text", "language").items()
             if lang in cfg.languages}
    if not texts:
        raise ValueError(f"{train_split} holds no text in {', '.join(cfg.languages)}")
    # The pivot side of the training pairs: what English and French share with this corpus (names, markup).
    pivot_texts = {lang: lines for lang, lines in _texts_by_language(train_split, "pivot_text", "pivot_language").items()
                   if lang in PIVOTS}
    base = load_base_tokenizer(cfg.tokenizer.base)
    extended, new_tokens = extend_with_config(base, texts, cfg.tokenizer, run_dir.tokenizer, normalize_config,
                                              pivot_texts=pivot_texts)
    measured: dict[str, list[str]] = defaultdict(list)
    for split in held_splits:
        for lang, lines in _texts_by_language(split, "text", "language").items():
            measured[lang].extend(lines)
        for lang, lines in _texts_by_language(split, "pivot_text", "pivot_language").items():
            measured[lang].extend(lines)
    held_pairs = _aligned_pairs(held_splits)
    all_pairs = _aligned_pairs([train_split, *held_splits])
    rows = []
    for lang in sorted(measured):
        lines = normalize_lines(measured[lang], lang, normalize_config) if normalize_config else measured[lang]
        held_aligned = _normalize_pairs(held_pairs.get(lang, {}), lang, normalize_config)
        before = set_premium(fertility(base, lines, lang, "dev+test"), base, held_aligned)
        after = set_premium(fertility(extended, lines, lang, "dev+test"), extended, held_aligned)
        everywhere = set_premium(Fertility(lang, "train+dev+test", 0, 0, 0, 0, 0, 0), base,
                                 _normalize_pairs(all_pairs.get(lang, {}), lang, normalize_config))
        reduction = round(1 - after.tokens / before.tokens, 4) if before.tokens else 0.0
        rows.append({"language": lang, "path": "dev+test", "lines": len(lines),
                     "tokenizers": {"base": before.to_dict(), "extended": after.to_dict()},
                     "token_reduction": reduction,
                     "base_premium_all_aligned": {"premium": everywhere.premium, "lines": everywhere.premium_lines,
                                                  "via": everywhere.premium_via, "factor": everywhere.premium_factor}})
        log.info("%s: %.3f -> %.3f tokens per word (%+.1f%% tokens) on %d lines; English premium %s -> %s",
                 lang, before.tokens_per_word, after.tokens_per_word, -100 * reduction, len(lines),
                 before.premium, after.premium)
    write_json(run_dir.tokenizer_stage / "stats.json", {
        "base": cfg.tokenizer.base, "budget": cfg.tokenizer.budget, "new_tokens": len(new_tokens),
        "new_tokens_by_language": dict(Counter(t.language for t in new_tokens)),
        "vocab_size": len(extended), "measured_on": [str(split) for split in held_splits],
        "normalized": bool(normalize_config), "fra_per_eng_tokens": FRA_PER_ENG_TOKENS,
        "languages": rows,
    })
    if rows:
        plot_fertility(rows, run_dir.tokenizer_stage / "fertility.png")
    return Path(run_dir.tokenizer_stage)
