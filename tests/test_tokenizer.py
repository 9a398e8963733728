"""The gpt-oss tokenizer rebuilt offline, its fertility, and its extension by continued BPE."""

from __future__ import annotations

import json

import pytest
import quicktok
from transformers import AutoTokenizer

from langkit.cli import main
from langkit.tokenizer import (
    BASE_VOCAB_SIZE,
    NUM_REGULAR_TOKENS,
    O200K_BASE_SHA256,
    fertility,
    load_new_tokens,
    write_o200k_tiktoken,
)
from langkit.utils import sha256_file
from tests.conftest import SAMPLE_TEXT

# Text in all six languages, with the characters that trip tokenizers up: tone marks (precomposed and
# combining), open vowels, ŋ and ñ, apostrophes of several kinds, digits, emoji, runs of spaces, newlines.
SIX_LANGUAGES = [
    "Jàngalekat bi dafa wax ne: «Xale yi ñëw nañu», te ñoom ñépp bég nañu. Ŋ ak ñ.",
    "Ɔ kɔ aliɛ nun, ɔ́ sɛ kɛ ɔ fa sika 1250 mɔ ɔ yo sa. ƐƆ",
    "Ng'ombe wa Mwalimu Juma alinunuliwa kwa shilingi 3,500 tarehe 12/04 — ni ghali!",
    "Mwǎna wa mobáli akɛndɛ́ kotɛ́kisa mbísi na zándo ya Kinsasa.",
    "Mwa\u0301na akende\u0301 na ndako  (combining acute, two spaces)",
    "L'été dernier, à Saint-Louis, j’ai vu 3 pêcheurs : « Ça va ? »",
    "The children's books weren't cheap: $12.99 each, 😀🌍 and 🇸🇳.\n\nNew paragraph.\tTabbed.",
    "   leading spaces, trailing spaces   ",
]


def test_o200k_vocabulary_matches_published_hash(tmp_path):
    path = write_o200k_tiktoken(tmp_path / "o200k_base.tiktoken")
    assert sha256_file(path) == O200K_BASE_SHA256
    assert sum(1 for _ in path.open()) == NUM_REGULAR_TOKENS


def test_rebuilt_tokenizer_matches_reference_id_for_id(base_tokenizer):
    reference = quicktok.get_encoding("o200k_harmony")
    assert len(base_tokenizer) == BASE_VOCAB_SIZE
    lines = SIX_LANGUAGES + [line for lines in SAMPLE_TEXT.values() for line in lines]
    for line in lines:
        ids = base_tokenizer(line, add_special_tokens=False)["input_ids"]
        assert ids == list(reference.encode_ordinary(line)), line
        assert base_tokenizer.decode(ids) == line


def test_harmony_special_tokens_keep_their_ids(base_tokenizer):
    expected = {
        "<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002, "<|constrain|>": 200003,
        "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007, "<|message|>": 200008,
        "<|call|>": 200012, "<|endofprompt|>": 200018, "<|reserved_201087|>": 201087,
    }
    assert {t: base_tokenizer.convert_tokens_to_ids(t) for t in expected} == expected
    ids = base_tokenizer("<|start|>user<|message|>Salaam<|end|>", add_special_tokens=False)["input_ids"]
    assert ids[0] == 200006 and ids[2] == 200008 and ids[-1] == 200007


def test_fertility_counts(base_tokenizer):
    lines = ["Nanga def", "Jërëjëf waay"]
    f = fertility(base_tokenizer, lines, "wol_Latn")
    tokens = sum(len(base_tokenizer(line, add_special_tokens=False)["input_ids"]) for line in lines)
    assert (f.lines, f.words, f.characters, f.tokens) == (2, 4, len(lines[0]) + len(lines[1]), tokens)
    assert f.tokens_per_word == pytest.approx(tokens / 4)
    assert f.chars_per_token == pytest.approx(f.characters / tokens)


def test_extension_keeps_every_base_id(base_tokenizer, extended_tokenizer):
    tokenizer, new_tokens, _ = extended_tokenizer
    base_vocab, vocab = base_tokenizer.get_vocab(), tokenizer.get_vocab()
    assert all(vocab[token] == i for token, i in base_vocab.items())
    assert len(tokenizer) == BASE_VOCAB_SIZE + len(new_tokens) > BASE_VOCAB_SIZE
    assert [t.id for t in new_tokens] == list(range(BASE_VOCAB_SIZE, BASE_VOCAB_SIZE + len(new_tokens)))
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|return|>", "<|endoftext|>")


def test_extension_round_trips_and_saves_tokens(base_tokenizer, extended_tokenizer):
    tokenizer, new_tokens, folder = extended_tokenizer
    for line in SIX_LANGUAGES + [line for lines in SAMPLE_TEXT.values() for line in lines]:
        assert tokenizer.decode(tokenizer(line, add_special_tokens=False)["input_ids"]) == line
    # Each new token stands for exactly the bytes of the base tokens it replaces.
    for token in new_tokens:
        assert tokenizer.decode([token.id]) == base_tokenizer.decode(token.base_ids)
        assert all(i < NUM_REGULAR_TOKENS for i in token.base_ids) and len(token.base_ids) >= 2
    assert load_new_tokens(folder / "new_tokens.json") == new_tokens
    reloaded = AutoTokenizer.from_pretrained(str(folder))
    assert len(reloaded) == len(tokenizer)


def test_extension_cuts_tokens_on_its_languages(base_tokenizer, extended_tokenizer):
    tokenizer, new_tokens, _ = extended_tokenizer
    used = set()
    for language, lines in SAMPLE_TEXT.items():
        before = fertility(base_tokenizer, lines).tokens
        after = fertility(tokenizer, lines).tokens
        assert after < before, language
        for ids in tokenizer(list(lines), add_special_tokens=False)["input_ids"]:
            used.update(i for i in ids if i >= BASE_VOCAB_SIZE)
    assert used, "no new token was produced on the text it was learned from"
    assert used <= {t.id for t in new_tokens}


def test_extension_leaves_unrelated_english_alone(base_tokenizer, extended_tokenizer):
    tokenizer, _, _ = extended_tokenizer
    line = "The weather report for tomorrow predicts heavy rain in the afternoon."
    assert tokenizer(line, add_special_tokens=False)["input_ids"] == base_tokenizer(line, add_special_tokens=False)["input_ids"]


def test_cli_stats_and_extend(tmp_path, capsys):
    wol = tmp_path / "wol.txt"
    wol.write_text("\n".join(SAMPLE_TEXT["wol_Latn"]) + "\n", encoding="utf-8")
    assert main(["-q", "tokenizer", "stats", "--text", f"wol_Latn:{wol}", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    (row,) = stats["files"]
    assert stats["vocab_size"] == BASE_VOCAB_SIZE
    assert row["lines"] == len(SAMPLE_TEXT["wol_Latn"]) and row["tokens"] > row["words"] > 0

    out = tmp_path / "extended"
    assert main(["-q", "tokenizer", "extend", "--budget", "10", "--text", f"wol_Latn:{wol}", "--out", str(out)]) == 0
    assert "10 new" in capsys.readouterr().out
    assert len(AutoTokenizer.from_pretrained(str(out))) == BASE_VOCAB_SIZE + 10
    assert main(["-q", "tokenizer", "stats", "--tokenizer", str(out), "--text", f"wol_Latn:{wol}", "--json"]) == 0
    extended = json.loads(capsys.readouterr().out)
    assert extended["vocab_size"] == BASE_VOCAB_SIZE + 10
    assert extended["files"][0]["tokens"] < row["tokens"]


def test_cli_rejects_bad_text_argument(capsys):
    assert main(["-q", "tokenizer", "stats", "--text", "wol_Latn"]) == 2
    assert "LANG:PATH" in capsys.readouterr().err
    assert main(["-q", "tokenizer", "stats", "--text", "xxx_Latn:/nonexistent"]) == 2
    assert "unknown language code" in capsys.readouterr().err
