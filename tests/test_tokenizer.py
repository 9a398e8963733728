"""The gpt-oss tokenizer rebuilt offline, its fertility, and its extension by continued BPE."""

from __future__ import annotations

import hashlib
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
    base_row = row["tokenizers"]["openai/gpt-oss-20b"]
    assert stats["tokenizers"] == {"openai/gpt-oss-20b": BASE_VOCAB_SIZE}
    assert base_row["lines"] == len(SAMPLE_TEXT["wol_Latn"]) and base_row["tokens"] > base_row["words"] > 0

    out = tmp_path / "extended"
    assert main(["-q", "tokenizer", "extend", "--budget", "10", "--text", f"wol_Latn:{wol}", "--out", str(out),
                 "--no-pivot-guard"]) == 0
    assert "10 new" in capsys.readouterr().out
    assert len(AutoTokenizer.from_pretrained(str(out))) == BASE_VOCAB_SIZE + 10
    png = tmp_path / "chart.png"
    assert main(["-q", "tokenizer", "stats", "--tokenizer", "openai/gpt-oss-20b", "--tokenizer", str(out),
                 "--text", f"wol_Latn:{wol}", "--json", "--plot", str(png)]) == 0
    both = json.loads(capsys.readouterr().out)["files"][0]["tokenizers"]
    base_tokens, extended_tokens = both["openai/gpt-oss-20b"]["tokens"], both[str(out)]["tokens"]
    assert extended_tokens < base_tokens
    # The cut is against the first tokenizer listed, on the same (normalized) text.
    assert both["openai/gpt-oss-20b"]["cut"] is None
    assert both[str(out)]["cut"] == round(1 - extended_tokens / base_tokens, 4) > 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    # The table form names every column the issue asks for.
    assert main(["-q", "tokenizer", "stats", "--tokenizer", str(out), "--text", f"wol_Latn:{wol}"]) == 0
    header = capsys.readouterr().out.splitlines()[1]
    for column in ("tok/word", "char/tok", "byte/tok", "split", "premium", "cut"):
        assert column in header


def test_cli_extend_settings_are_applied_and_recorded(tmp_path, capsys):
    wol = tmp_path / "wol.txt"
    wol.write_text("\n".join(SAMPLE_TEXT["wol_Latn"]) + "\n", encoding="utf-8")

    def extend(out, *flags):
        assert main(["-q", "tokenizer", "extend", "--budget", "6", "--text", f"wol_Latn:{wol}", "--out", str(out),
                     *flags]) == 0
        return json.loads((out / "extension.json").read_text("utf-8"))

    record = extend(tmp_path / "sp", "--mode", "sentencepiece", "--no-whole-words", "--pivot-guard-tolerance", "0.01")
    settings = record["settings"]
    assert (settings["mode"], settings["whole_words"], settings["pivot_guard_tolerance"], settings["pivot_guard"]) == (
        "sentencepiece", False, 0.01, True)
    learned = json.loads((tmp_path / "sp" / "new_tokens.json").read_text("utf-8"))
    assert record["new_tokens"]["total"] == len(learned) and record["vocabulary"] == BASE_VOCAB_SIZE + len(learned)

    record = extend(tmp_path / "pooled", "--balance", "none", "--no-pivot-guard")
    assert (record["settings"]["balance"], record["settings"]["mode"], record["settings"]["whole_words"]) == (
        "none", "bpe", True)
    assert record["base_vocabulary"] == BASE_VOCAB_SIZE and record["vocabulary"] == BASE_VOCAB_SIZE + 6
    assert record["new_tokens"] == {"total": 6, "all": 6}  # pooled: one share paid for every token
    assert record["languages"]["wol_Latn"]["lines"] == len(SAMPLE_TEXT["wol_Latn"])
    (source,) = record["sources"]
    assert source["language"] == "wol_Latn" and source["sha256"] == hashlib.sha256(wol.read_bytes()).hexdigest()

    # A fixed share is a ceiling: Wolof alone, held to 4 of the 6 tokens.
    record = extend(tmp_path / "fixed", "--language-budget", "wol_Latn=4", "--no-pivot-guard")
    assert record["settings"]["language_budgets"] == {"wol_Latn": 4} and record["new_tokens"] == {"total": 4, "wol_Latn": 4}
    assert main(["-q", "tokenizer", "extend", "--budget", "6", "--text", f"wol_Latn:{wol}", "--out", str(tmp_path / "x"),
                 "--language-budget", "wol_Latn=many"]) == 2
    assert "must look like LANG=N" in capsys.readouterr().err


def test_extend_swaps_the_folder_in_whole_and_refuses_a_folder_that_is_not_a_tokenizer(base_tokenizer, tmp_path):
    from langkit.tokenizer import extend_tokenizer

    out = tmp_path / "tok"
    extend_tokenizer(base_tokenizer, SAMPLE_TEXT, 5, out, 1, describe=lambda tokens: {"total": len(tokens)})
    assert json.loads((out / "extension.json").read_text("utf-8")) == {"total": 5}
    # Over an earlier tokenizer: replaced whole, so nothing of the earlier run is left (its extension.json).
    _, new_tokens = extend_tokenizer(base_tokenizer, SAMPLE_TEXT, 3, out, 1)
    assert not (out / "extension.json").exists() and len(json.loads((out / "new_tokens.json").read_text("utf-8"))) == 3
    assert not list(tmp_path.glob(".*"))  # no temporary or old folder left beside it

    # A folder holding anything else is refused, untouched, with its name and the strangers' names.
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("keep me", encoding="utf-8")
    with pytest.raises(ValueError, match=r"notes holds files that are not a tokenizer's \(thesis.tex\)"):
        extend_tokenizer(base_tokenizer, SAMPLE_TEXT, 3, notes, 1)
    assert [p.name for p in notes.iterdir()] == ["thesis.tex"] and not list(tmp_path.glob(".*"))
    # A file at the destination is refused before any learning, and kept.
    with pytest.raises(ValueError, match="thesis.tex is a file"):
        extend_tokenizer(base_tokenizer, SAMPLE_TEXT, 3, notes / "thesis.tex", 1)
    assert (notes / "thesis.tex").read_text("utf-8") == "keep me"


def test_word_count_discount_is_estimated_from_words_seen_once_and_twice():
    from langkit.tokenizer import word_count_discount

    # n1 = 3 words seen once, n2 = 1 seen twice: 3 / (3 + 2); the frequent words do not enter it.
    assert word_count_discount([1, 1, 1, 2, 7, 40]) == 3 / 5
    assert word_count_discount([2, 2]) == 0.0  # nothing seen only once: counts are taken as they are
    assert word_count_discount([5, 9]) == 0.5  # no rare words at all: the usual default


def test_cli_rejects_bad_text_argument(capsys):
    assert main(["-q", "tokenizer", "stats", "--text", "wol_Latn"]) == 2
    assert "LANG:PATH" in capsys.readouterr().err
    assert main(["-q", "tokenizer", "stats", "--text", "xxx_Latn:/nonexistent"]) == 2
    assert "unknown language code" in capsys.readouterr().err


@pytest.fixture
def online_but_no_network(monkeypatch):
    """As outside ``make``: HF_HUB_OFFLINE unset, on a machine that cannot reach the Hub. Every attempt to
    open a connection (or look a host name up) is recorded and refused at once."""
    import socket

    from huggingface_hub import constants

    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args[0] if args else kwargs)
        raise OSError("no network here")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_stats_outside_make_checks_arguments_first_and_never_calls_the_hub(online_but_no_network, tmp_path, capsys):
    assert main(["-q", "tokenizer", "stats", "--text", f"wol_Latn:{tmp_path / 'missing.txt'}"]) == 2
    assert "no such file" in capsys.readouterr().err
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Jërëjëf\n".encode("latin-1"))
    assert main(["-q", "tokenizer", "stats", "--text", f"wol_Latn:{latin1}"]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err
    # gpt-oss's tokenizer is rebuilt offline (the same ids): no reason to ask the Hub for it.
    wol = tmp_path / "wol.txt"
    wol.write_text("Nanga def? Maa ngi fi rekk.\n", encoding="utf-8")
    assert main(["-q", "tokenizer", "stats", "--text", f"wol_Latn:{wol}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokenizers"] == {"openai/gpt-oss-20b": BASE_VOCAB_SIZE}
    assert online_but_no_network == []


def test_a_tokenizer_only_the_hub_has_fails_fast_and_quietly(online_but_no_network, tmp_path, capsys, caplog):
    wol = tmp_path / "wol.txt"
    wol.write_text("Nanga def?\n", encoding="utf-8")
    assert main(["tokenizer", "stats", "--tokenizer", "some-org/some-tokenizer", "--text", f"wol_Latn:{wol}"]) == 2
    err = capsys.readouterr().err
    assert "'some-org/some-tokenizer' is not a local folder and not in the Hugging Face cache" in err
    assert "did not answer within 3 s" in err
    assert len(online_but_no_network) == 1  # one look, no retries
    assert "Retrying" not in err + caplog.text


def test_text_files_that_are_not_utf8_or_empty_are_refused_by_name(tmp_path, capsys):
    latin1 = tmp_path / "wol_latin1.txt"
    latin1.write_bytes("Nanga def\nJërëjëf, ba beneen\n".encode("latin-1"))
    for command in (["stats"], ["extend", "--budget", "5", "--out", str(tmp_path / "t")]):
        assert main(["-q", "tokenizer", *command, "--text", f"wol_Latn:{latin1}"]) == 2
        assert f"{latin1}, line 2: not UTF-8 text (byte 0xeb at byte 2 of the line)" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    assert main(["-q", "tokenizer", "extend", "--budget", "5", "--text", f"wol_Latn:{empty}", "--out", str(tmp_path / "t")]) == 2
    assert "holds no text" in capsys.readouterr().err and not (tmp_path / "t").exists()


def test_read_lines_splits_where_a_text_file_does(tmp_path):
    from langkit.tokenizer import read_lines

    # U+2028, U+0085 and form feeds stay inside their line (str.splitlines would cut there and shift the
    # lines against an aligned English file); \r\n and \r end lines; a BOM is dropped.
    path = tmp_path / "mixed.txt"
    path.write_bytes("\ufeffa\u2028b\r\nc\u0085d\x0ce\r\rf\n".encode("utf-8"))
    assert read_lines(path, keep_empty=True) == ["a\u2028b", "c\u0085d\x0ce", "", "f"]
    assert read_lines(path) == ["a\u2028b", "c\u0085d\x0ce", "f"]


# --- issue 4: balance, pivot guard, every token used, measurement -----------------------------------

# Pivot sentences with words that gpt-oss cuts into pieces (mangroves -> " mang" "ro" "ves"): the
# kind of word a target-language text borrows, and an unguarded BPE would merge.
ENGLISH = [
    "The mangroves protect the cassava and sorghum fields from the sea.",
    "Groundnuts and hibiscus grow well after the rains.",
]
FRENCH = [
    "Le paludisme recule quand chaque lit a sa moustiquaire.",
    "Après la sécheresse, la récolte de manioc et d'arachides fut maigre.",
]
PROTECTED = ["mangroves", "cassava", "sorghum", "Groundnuts", "hibiscus", "paludisme", "moustiquaire",
             "sécheresse", "récolte", "manioc", "arachides"]


def test_pivot_guard_keeps_english_and_french(base_tokenizer, tmp_path):
    from langkit.tokenizer import PivotGuard, extend_tokenizer

    borrowed = " ".join(PROTECTED)
    texts = {"wol_Latn": [f"Ñu ngi jënd {borrowed} ci marse bi."] * 5 + SAMPLE_TEXT["wol_Latn"],
             "lin_Latn": [f"Tozali na {borrowed} na zando."] * 5 + SAMPLE_TEXT["lin_Latn"]}
    guard = PivotGuard.from_words(base_tokenizer, PROTECTED)
    unguarded, _ = extend_tokenizer(base_tokenizer, texts, 60, tmp_path / "plain", 2)
    guarded, new_tokens = extend_tokenizer(base_tokenizer, texts, 60, tmp_path / "guarded", 2, guard=guard)

    def changed(tok):
        return sum(tok(line, add_special_tokens=False)["input_ids"] != base_tokenizer(line, add_special_tokens=False)["input_ids"]
                   for line in ENGLISH + FRENCH)

    assert changed(unguarded) == len(ENGLISH + FRENCH)  # the test text really tempts BPE
    assert changed(guarded) == 0
    assert new_tokens and all(t.token not in guard.words for t in new_tokens)


def test_pivot_guard_reads_frequent_words_offline(base_tokenizer):
    from langkit.tokenizer import PivotGuard

    guard = PivotGuard.build(base_tokenizer, top_n=2000, names=False)
    bt = base_tokenizer.backend_tokenizer
    # A frequent French word that gpt-oss cuts in two is protected with and without its leading space.
    piece = bt.pre_tokenizer.pre_tokenize_str(" aujourd")[0][0]
    assert piece in guard.words
    ids = [t.id for t in bt.model.tokenize(piece)]
    assert len(ids) == 1 or (ids[0], ids[1]) in guard.pairs


def test_every_new_token_is_produced_on_its_training_text(base_tokenizer, tmp_path):
    from langkit.tokenizer import extend_tokenizer

    tokenizer, new_tokens = extend_tokenizer(base_tokenizer, SAMPLE_TEXT, 150, tmp_path / "t", 1)
    used = set()
    for lines in SAMPLE_TEXT.values():
        for ids in tokenizer(list(lines), add_special_tokens=False)["input_ids"]:
            used.update(i for i in ids if i >= BASE_VOCAB_SIZE)
    assert used == {t.id for t in new_tokens}


def _learn_one_word_token(base_tokenizer, folder, language: str, word: str, line: str, base_tokens: int):
    """Extend by one token on five lines holding ``word`` (cut in ``base_tokens`` by gpt-oss) plus the sample
    text, and check what every whole-word token must be: the word's own token, its embedding starting from
    the base ids it replaces, and text that still round-trips. Returns (tokenizer, token, lines)."""
    from langkit.tokenizer import extend_tokenizer

    base_ids = base_tokenizer(word, add_special_tokens=False)["input_ids"]
    assert len(base_ids) == base_tokens
    lines = [line.format(word) for _ in range(5)] + SAMPLE_TEXT[language]
    tokenizer, new_tokens = extend_tokenizer(base_tokenizer, {language: lines}, 1, folder, 1)
    (token,) = new_tokens
    assert tokenizer(word, add_special_tokens=False)["input_ids"] == [token.id] and token.base_ids == base_ids
    assert token.frequency == 5 * (base_tokens - 1)
    for text in lines:
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    return tokenizer, token, lines


def test_whole_word_that_no_two_tokens_spell_gets_a_token_without_a_merge(base_tokenizer, tmp_path):
    # gpt-oss cuts this Baoulé word in seven, and no two of its tokens spell it: its own token needs no merge
    # (the whole-word lookup finds it), and it saves more than any pair merge on this text.
    tokenizer, token, lines = _learn_one_word_token(base_tokenizer, tmp_path / "w", "bci_Latn", " sɔnnzɔnfuɛ",
                                                    "Be{} be ti.", 7)
    assert token.merge is None
    assert token.id in tokenizer(lines[0], add_special_tokens=False)["input_ids"]
    # No merge was appended, the vocabulary grew by one, and the saved list reads back the same.
    saved = json.loads((tmp_path / "w" / "tokenizer.json").read_text("utf-8"))["model"]
    base_model = json.loads(base_tokenizer.backend_tokenizer.to_str())["model"]
    assert len(saved["merges"]) == len(base_model["merges"]) and len(tokenizer) == BASE_VOCAB_SIZE + 1
    assert load_new_tokens(tmp_path / "w" / "new_tokens.json") == [token]


def test_whole_word_gets_its_own_token_in_one_merge(base_tokenizer, tmp_path):
    from langkit.tokenizer import extend_tokenizer

    # gpt-oss cuts this word in three (" ng", "or", "ika") but holds " ngo" and "rika": one merge of those
    # spells the whole word, and gpt-oss's BPE looks a word up whole before merging, so one new id takes
    # it to one token, which saves more than any single pair merge on this text.
    _, token, lines = _learn_one_word_token(base_tokenizer, tmp_path / "w", "lin_Latn", " ngorika",
                                            "Tala{} na zando.", 3)
    assert token.merge is not None and "".join(token.merge) == token.token
    # Without whole words the same budget buys one pair merge, which saves less on this text.
    _, pair_only = extend_tokenizer(base_tokenizer, {"lin_Latn": lines}, 1, tmp_path / "p", 1, whole_words=False)
    assert pair_only[0].frequency < token.frequency


def test_every_new_token_is_produced_with_and_without_whole_words(base_tokenizer, tmp_path):
    from langkit.tokenizer import extend_tokenizer

    # A long run of merges on little text: whole-word steps, their spelling merges and the pair merges
    # compete for the same tokens; none may leave an earlier new token unused.
    texts = {lang: lines * 2 + [line.upper() for line in lines] for lang, lines in SAMPLE_TEXT.items()}
    for whole_words in (True, False):
        tokenizer, new_tokens = extend_tokenizer(base_tokenizer, texts, 400, tmp_path / str(whole_words), 1,
                                                 whole_words=whole_words)
        used = set()
        for lines in texts.values():
            for ids in tokenizer(list(lines), add_special_tokens=False)["input_ids"]:
                used.update(i for i in ids if i >= BASE_VOCAB_SIZE)
        assert used == {t.id for t in new_tokens}


def test_pivot_guard_weighs_words_by_frequency(base_tokenizer):
    from langkit.tokenizer import PivotGuard

    bt = base_tokenizer.backend_tokenizer

    def pairs(text):
        ids = [t.id for t in bt.model.tokenize(bt.pre_tokenizer.pre_tokenize_str(text)[0][0])]
        return set(zip(ids, ids[1:], strict=False))

    frequent, rare = "moustiquaire", "sorghum"
    guard = PivotGuard.from_frequencies(base_tokenizer, {frequent: 1e-4, rare: 1e-8}, tolerance=1e-6)
    assert pairs(" " + frequent) <= guard.pairs and pairs(" Moustiquaire") <= guard.pairs
    assert not pairs(" " + rare) & guard.pairs
    piece = bt.pre_tokenizer.pre_tokenize_str(" " + frequent)[0][0]
    assert piece in guard.words
    # French elision: l'école gives the piece "'école", protected like the word itself.
    assert pairs("'" + "école") <= PivotGuard.from_frequencies(base_tokenizer, {"école": 1e-4}, 1e-6).pairs
    # Rare words add up: many words sharing a pair protect it together.
    weights, _ = PivotGuard.weigh(base_tokenizer, {rare: 1e-8, "sorghums": 1e-8})
    assert all(weights[p] == pytest.approx(2e-8) for p in pairs(" " + rare) & pairs(" sorghums"))


def test_pivot_guard_is_cached(base_tokenizer, tmp_path, monkeypatch):
    from langkit import tokenizer as tokenizer_module
    from langkit.tokenizer import PivotGuard

    monkeypatch.setattr(tokenizer_module, "cache_dir", lambda: tmp_path)
    first = PivotGuard.build(base_tokenizer, top_n=500, names=False)
    assert len(list((tmp_path / "pivot-guard").glob("*.json"))) == 1
    assert PivotGuard.build(base_tokenizer, top_n=500, names=False) == first
    assert PivotGuard.build(base_tokenizer, top_n=500, tolerance=1e-3, names=False) != first  # other settings, other entry
    assert len(list((tmp_path / "pivot-guard").glob("*.json"))) == 2


def test_equal_balance_gives_the_small_corpus_its_share(base_tokenizer, tmp_path):
    from collections import Counter

    from langkit.tokenizer import learn_merges

    # Swahili 20 times larger than Baoulé: pooled BPE spends most of the budget on Swahili.
    texts = {"swh_Latn": SAMPLE_TEXT["swh_Latn"] * 20 + [f"Mwalimu wa {n} anafundisha watoto" for n in
                                                         ("Juma", "Amina", "Baraka", "Neema")] * 20,
             "bci_Latn": SAMPLE_TEXT["bci_Latn"]}
    equal, _ = learn_merges(base_tokenizer, texts, 20, 1, balance="equal")
    assert Counter(t.language for t in equal) == {"bci_Latn": 10, "swh_Latn": 10}
    proportional, _ = learn_merges(base_tokenizer, texts, 20, 1, balance="proportional")
    assert Counter(t.language for t in proportional)["bci_Latn"] <= 1
    fixed, _ = learn_merges(base_tokenizer, texts, 20, 1, language_budgets={"bci_Latn": 4})
    assert Counter(t.language for t in fixed) == {"bci_Latn": 4, "swh_Latn": 16}
    # "relative": each merge goes to the language it helps most, measured against that language's size.
    relative, _ = learn_merges(base_tokenizer, texts, 20, 1, balance="relative")
    assert len(relative) == 20 and Counter(t.language for t in relative)["bci_Latn"] > 1
    # A language that runs out of pairs leaves its share to the others: the budget is still spent.
    drained, _ = learn_merges(base_tokenizer, {"swh_Latn": texts["swh_Latn"], "bci_Latn": ["Akwaba"]}, 20, 1)
    assert len(drained) == 20


def test_words_only_learns_no_number_or_punctuation_token(base_tokenizer):
    from langkit.tokenizer import learn_merges

    texts = {"swh_Latn": ["Bei ni 1,250,000 !!! ... 2024-05-17 ((( )))"] * 10 + SAMPLE_TEXT["swh_Latn"]}
    new_tokens, _ = learn_merges(base_tokenizer, texts, 30, 2, words_only=True)
    assert new_tokens and all(any(ch.isalpha() for ch in t.text) for t in new_tokens)


def test_compare_tokenizers_premium_and_normalization(base_tokenizer, extended_tokenizer, tmp_path):
    from langkit.tokenizer import compare_tokenizers, plot_fertility

    bci = tmp_path / "bci.txt"
    bci.write_text("Ɔ kɔ aliε nun\nMin klo nzue\n", encoding="utf-8")  # Greek ε standing in for ɛ
    eng = tmp_path / "eng.txt"
    eng.write_text("He went to eat\nI like water\n", encoding="utf-8")
    tokenizer, _, _ = extended_tokenizer
    rows = compare_tokenizers({"base": base_tokenizer, "ext": tokenizer},
                              [("bci_Latn", bci), ("eng_Latn", eng)])
    stats = rows[0]["tokenizers"]["base"]
    eng_tokens = rows[1]["tokenizers"]["base"]["tokens"]
    assert stats["premium"] == pytest.approx(stats["tokens"] / eng_tokens, abs=1e-4)
    assert rows[1]["tokenizers"]["base"]["premium"] is None
    # Normalized: the Greek letter was folded to ɛ before counting.
    folded = base_tokenizer("Ɔ kɔ aliɛ nun", add_special_tokens=False)["input_ids"]
    other = base_tokenizer("Min klo nzue", add_special_tokens=False)["input_ids"]
    assert stats["tokens"] == len(folded) + len(other)
    assert 0 < stats["split_words"] <= stats["words"] == 7
    png = plot_fertility(rows, tmp_path / "fertility.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sentencepiece_mode_learns_merges_inside_its_pieces(base_tokenizer, tmp_path):
    from langkit.tokenizer import extend_tokenizer, sentencepiece_segments

    texts = {lang: lines * 4 for lang, lines in SAMPLE_TEXT.items()}
    segments = sentencepiece_segments(texts["swh_Latn"], vocab_size=64)
    assert "".join(segments) == "".join(texts["swh_Latn"])  # a segmentation: nothing lost or added
    tokenizer, new_tokens = extend_tokenizer(base_tokenizer, texts, 40, tmp_path / "sp", 2, mode="sentencepiece")
    assert new_tokens
    for lines in texts.values():
        for line in lines:
            assert tokenizer.decode(tokenizer(line, add_special_tokens=False)["input_ids"]) == line
    # Every new token spells a run of text that one SentencePiece piece of some line covers.
    pieces = {seg for lang in texts for seg in sentencepiece_segments(texts[lang], vocab_size=64)}
    assert all(any(t.text in piece for piece in pieces) for t in new_tokens)


def test_unknown_tokenizer_offline_is_a_clear_error(capsys):
    # HF_HUB_OFFLINE=1 (conftest): only gpt-oss's own tokenizer can be rebuilt without the Hub.
    assert main(["-q", "tokenizer", "stats", "--tokenizer", "someorg/no-such-model", "--text",
                 f"wol_Latn:{__file__}"]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err


# Line-aligned text written for these tests: Wolof, its English and its French, line for line.
ALIGNED = {
    "wol_Latn": ["Xale yi dañuy dem lekkool ci suba.", "Ndox mi dafa sedd lool.", "",
                 "Sama yaay dafa togg ceebu jën."],
    "eng_Latn": ["The children go to school in the morning.", "The water is very cold.", "An unpaired line.",
                 "My mother cooked rice and fish."],
    "fra_Latn": ["Les enfants vont à l'école le matin.", "L'eau est très froide.", "Une ligne sans paire.",
                 "Ma mère a préparé du riz au poisson."],
}


def _tokens(tokenizer, lines):
    return sum(len(ids) for ids in tokenizer(list(lines), add_special_tokens=False)["input_ids"])


def test_premium_is_over_aligned_english_or_over_french_converted(base_tokenizer, tmp_path):
    from langkit.tokenizer import FRA_PER_ENG_TOKENS, compare_tokenizers

    paths = {}
    for language, lines in ALIGNED.items():
        paths[language] = tmp_path / f"flores.dev.{language[:3]}"
        paths[language].write_text("\n".join(lines) + "\n", encoding="utf-8")
    # Another English file with as many lines: the one named like the Wolof file is its aligned English.
    (tmp_path / "other").mkdir()
    decoy = tmp_path / "other" / "news.eng"
    decoy.write_text("One.\nTwo.\nThree.\nFour.\n", encoding="utf-8")
    pairs = [(w, e, f) for w, e, f in zip(*ALIGNED.values(), strict=True) if w]  # the empty Wolof line has no pair
    wol, eng, fra = ([p[i] for p in pairs] for i in range(3))

    rows = compare_tokenizers({"base": base_tokenizer}, [("eng_Latn", decoy), ("wol_Latn", paths["wol_Latn"]),
                                                         ("eng_Latn", paths["eng_Latn"])], normalize=False)
    stats = rows[1]["tokenizers"]["base"]
    assert stats["premium"] == round(_tokens(base_tokenizer, wol) / _tokens(base_tokenizer, eng), 4)
    assert stats["premium_lines"] == 3 and stats["premium_via"] is None
    assert rows[0]["tokenizers"]["base"]["premium"] is None  # English has no premium over itself

    # French only: the premium over French, converted with the French/English factor.
    rows = compare_tokenizers({"base": base_tokenizer}, [("wol_Latn", paths["wol_Latn"]),
                                                         ("fra_Latn", paths["fra_Latn"])], normalize=False)
    stats = rows[0]["tokenizers"]["base"]
    over_french = _tokens(base_tokenizer, wol) / _tokens(base_tokenizer, fra)
    assert stats["premium_via"] == "fra_Latn" and stats["premium_factor"] == FRA_PER_ENG_TOKENS
    assert stats["premium"] == round(over_french * FRA_PER_ENG_TOKENS, 4) and stats["premium_lines"] == 3

    # French and English aligned with each other: the factor is the French file's own, measured.
    rows = compare_tokenizers({"base": base_tokenizer}, [("wol_Latn", paths["wol_Latn"]),
                                                         ("fra_Latn", paths["fra_Latn"]),
                                                         ("eng_Latn", paths["eng_Latn"])], normalize=False)
    french = rows[1]["tokenizers"]["base"]
    assert french["premium"] == round(_tokens(base_tokenizer, ALIGNED["fra_Latn"]) /
                                      _tokens(base_tokenizer, ALIGNED["eng_Latn"]), 4)
    assert rows[0]["tokenizers"]["base"]["premium_via"] is None  # English itself was there: measured directly


def test_cli_stats_prints_the_premium_and_its_pairs(tmp_path, capsys):
    paths = []
    for language in ("wol_Latn", "fra_Latn"):
        path = tmp_path / f"udhr.{language[:3]}"
        path.write_text("\n".join(ALIGNED[language]) + "\n", encoding="utf-8")
        paths += ["--text", f"{language}:{path}"]
    assert main(["-q", "tokenizer", "stats", *paths]) == 0
    out = capsys.readouterr().out
    wolof = next(line for line in out.splitlines() if line.startswith("wol_Latn"))
    assert "*" in wolof.split()[-2] and wolof.split()[-1] == "3"
    assert "aligned French" in out


def test_stage_reports_premium_on_held_out_and_all_aligned_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from langkit import tokenizer as stage
    from langkit.config import config_from_dict
    from langkit.rundir import RunDir

    run_dir = RunDir(tmp_path / "run")
    run_dir.dataset.mkdir(parents=True)
    columns = ("language", "text", "pivot_language", "pivot_text")
    rows = {
        # train: Wolof aligned with French, Swahili aligned with English, Swahili without a pivot
        "train": [("wol_Latn", line, "fra_Latn", "Phrase française numéro un.") for line in SAMPLE_TEXT["wol_Latn"]]
        + [("swh_Latn", line, "eng_Latn", "An English sentence.") for line in SAMPLE_TEXT["swh_Latn"][:4]]
        + [("swh_Latn", line, "", "") for line in SAMPLE_TEXT["swh_Latn"][4:]],
        "dev": [("wol_Latn", ALIGNED["wol_Latn"][0], "fra_Latn", ALIGNED["fra_Latn"][0])],
        "test": [("wol_Latn", ALIGNED["wol_Latn"][1], "fra_Latn", ALIGNED["fra_Latn"][1]),
                 ("swh_Latn", "Watoto wanakwenda shuleni.", "eng_Latn", "The children go to school."),
                 ("swh_Latn", "Maji ni baridi.", "", "")],
    }
    for split, records in rows.items():
        pq.write_table(pa.table({c: [r[i] for r in records] for i, c in enumerate(columns)}), run_dir.split(split))
    cfg = config_from_dict({"languages": ["wol_Latn", "swh_Latn"],
                            "tokenizer": {"budget": 5, "pivot_guard": False, "min_frequency": 2}})
    stage.run(cfg, run_dir)
    stats = json.loads((run_dir.tokenizer_stage / "stats.json").read_text("utf-8"))
    by_language = {row["language"]: row for row in stats["languages"]}
    assert set(by_language) == {"wol_Latn", "swh_Latn", "fra_Latn", "eng_Latn"}
    wolof, swahili = by_language["wol_Latn"], by_language["swh_Latn"]
    # Measured on dev and test together, never on the test split alone.
    assert wolof["lines"] == 2 and swahili["lines"] == 2 and len(stats["measured_on"]) == 2
    for name in ("base", "extended"):
        assert wolof["tokenizers"][name]["premium_via"] == "fra_Latn" and wolof["tokenizers"][name]["premium_lines"] == 2
        assert swahili["tokenizers"][name]["premium_via"] is None and swahili["tokenizers"][name]["premium_lines"] == 1
        assert wolof["tokenizers"][name]["premium"] > 0 and swahili["tokenizers"][name]["premium"] > 0
    # The base tokenizer's premium on every aligned pair of the corpus, train split included.
    assert wolof["base_premium_all_aligned"]["lines"] == len(SAMPLE_TEXT["wol_Latn"]) + 2
    assert swahili["base_premium_all_aligned"]["lines"] == 4 + 1
    assert by_language["fra_Latn"]["tokenizers"]["base"]["premium"] is None


def test_pivot_text_guard_keeps_shared_names_out_and_target_words_in(base_tokenizer, tmp_path):
    from langkit.tokenizer import PivotGuard, extend_tokenizer

    # Invented names that a Swahili story and its English side share, and a Swahili word that the English
    # side quotes once: the names belong to English too, the word does not (English uses it far less).
    names = "Zelamuko Bwakenyi Ntaluhira"
    swahili = [f"Rais {names} alisema kwamba wananchi wanahitaji maji safi kijijini."] * 6 + [
        "Wananchi wanahitaji maji safi na chakula kijijini kila siku."] * 6
    english = [f"President {names} said that citizens need clean water in the village."] * 6 + [
        "The crowd chanted kijijini at the rally."] + ["The weather was fine and people went to work early."] * 80
    guard = PivotGuard(set(), set()).with_text(base_tokenizer, english)
    plain, _ = extend_tokenizer(base_tokenizer, {"swh_Latn": swahili}, 40, tmp_path / "plain", 2)
    guarded, new_tokens = extend_tokenizer(base_tokenizer, {"swh_Latn": swahili}, 40, tmp_path / "guarded", 2,
                                           guard=guard)

    def ids(tok, line):
        return tok(line, add_special_tokens=False)["input_ids"]

    held_out = f"Yesterday {names} visited the village again."
    assert ids(plain, held_out) != ids(base_tokenizer, held_out)  # the names really tempt BPE
    assert ids(guarded, held_out) == ids(base_tokenizer, held_out)
    # Target words that the pivot text uses far less than Swahili does still get their tokens.
    assert "kijijini" in {t.text.strip() for t in new_tokens}
    assert len(ids(guarded, swahili[6])) < len(ids(base_tokenizer, swahili[6]))


def test_cli_extend_refuses_pivot_text_that_is_not_a_pivot(tmp_path, capsys):
    wol = tmp_path / "wol.txt"
    wol.write_text("\n".join(SAMPLE_TEXT["wol_Latn"]) + "\n", encoding="utf-8")
    assert main(["-q", "tokenizer", "extend", "--budget", "5", "--text", f"wol_Latn:{wol}", "--out",
                 str(tmp_path / "out"), "--pivot-text", f"lin_Latn:{wol}"]) != 0
    assert "the pivots are eng_Latn and fra_Latn" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_names_are_protected_capitalised_only(base_tokenizer, tmp_path):
    from langkit.tokenizer import PivotGuard, extend_tokenizer

    # A word the pivot lists hold (rarely) as a name, written capitalised in running text; its lower-case
    # form stays the target language's to take.
    pairs, pieces = PivotGuard.weigh(base_tokenizer, {"zelamuko": 1.0}, forms_only=PivotGuard.NAME_FORMS)
    guard = PivotGuard(set(pairs), set(pieces))
    swahili = ["Zelamuko alisema zelamuko ni zelamuko."] * 8
    tokenizer, _ = extend_tokenizer(base_tokenizer, {"swh_Latn": swahili}, 20, tmp_path / "t", 2, guard=guard)

    def ids(tok, line):
        return tok(line, add_special_tokens=False)["input_ids"]

    for name in ("Zelamuko met the press.", "They met Zelamuko."):
        assert ids(tokenizer, name) == ids(base_tokenizer, name)
    assert len(ids(tokenizer, " zelamuko")) < len(ids(base_tokenizer, " zelamuko"))
