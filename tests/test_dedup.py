"""Near-duplicate removal (MinHash + LSH) and decontamination: the index and the decontaminator on
their own, then inside corpus builds (reasons, pointers, accounting, config)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from langkit.config import ConfigError, SourceConfig, config_from_dict, load_config
from langkit.corpus import build_corpus, run
from langkit.corpus.dedup import Decontaminator, Match, MinHasher, NearDuplicateIndex, dedup_text
from langkit.rundir import RunDir

# Illustrative sentences written for these tests (not validated language data). A sentence of about
# 160 characters: one word changed keeps about 0.9 of its character 5-grams.
MARKET = (
    "Sama yaay dafa dem ca tool ba ngir bey gerte, te mu ñëw ci ngoon si ak mburu mu bari lool. "
    "Ñu lekk ko ak sunu mbokk yépp, ba noppi ñu toog ci buntu kër gi di waxtaan."
)
MARKET_ONE_WORD = MARKET.replace("mburu", "ceeb")
MARKET_PUNCT_CASE = (
    "SAMA yaay dafa dem ca tool ba ngir bey gerte te mu ñëw ci ngoon si ak mburu mu bari lool!! "
    "ñu lekk ko ak sunu mbokk yépp; ba noppi ñu toog ci buntu kër gi di waxtaan"
)
SCHOOL = (
    "Xale yi dañuy dem lekool ba suba teel, te ñu jàng ba ci ngoon, ba noppi ñu dellu kër ga "
    "ngir lekk ak fo ak seen xarit yu ndaw yi."
)
WATER = (
    "Ndox mi dafa sedd lool, naan ko ci kaas bi te bul ko tuur ci suuf si, ndax ndox dafa jafe "
    "ci dëkk bii ci jamono jii."
)
MARKET_FR = (
    "Ma mère est allée au champ cultiver l'arachide, et elle est revenue le soir avec beaucoup de pain. "
    "Nous l'avons mangé en famille, puis nous avons causé devant la porte."
)
OTHER_FR = "Ma mère a rapporté du champ, le soir, beaucoup de pain que toute la famille a mangé."


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_accounting(stats: dict[str, Any]) -> None:
    """read == kept + dropped + quarantined, per source and per language, and kept == the splits."""
    for s in stats["sources"]:
        assert s["read"] == s["kept"] + sum(s["dropped"].values()) + s["quarantined"], s["name"]
    for code, lang in stats["languages"].items():
        assert lang["read"] == lang["kept"] + sum(lang["dropped"].values()) + lang["quarantined"], code
        assert lang["kept"] == sum(lang["splits"].values()), code


def tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    return write(path, "wol_Latn\tfra_Latn\n" + "".join(f"{w}\t{f}\n" for w, f in rows))


def pair_source(path: Path, name: str = "wol-pairs") -> SourceConfig:
    return SourceConfig(
        str(path), "tsv", "wol_Latn", name=name, license="CC-BY-4.0",
        text_field="wol_Latn", pivot_field="fra_Latn", pivot_language="fra_Latn",
    )  # fmt: skip


def mono_source(path: Path, name: str) -> SourceConfig:
    return SourceConfig(str(path), "text", "wol_Latn", name=name, license="CC-BY-4.0")


# --------------------------------------------------------------------------------------------------
# The index and the decontaminator
# --------------------------------------------------------------------------------------------------


def test_dedup_text_ignores_case_and_punctuation_but_not_letters() -> None:
    assert dedup_text("  Nanga def?!  «Jërëjëf» ") == "nanga def jërëjëf"
    assert dedup_text("ng'ombe <PHONE>") == "ng ombe phone"
    assert dedup_text("jërëjëf") != dedup_text("jerejef")  # ë is a Wolof letter, not an accent
    assert dedup_text("?!…") == ""


def test_index_finds_one_word_and_punctuation_variants_and_keeps_distinct_sentences() -> None:
    index = NearDuplicateIndex()
    assert index.add("a", MARKET) is None
    assert index.add("b", SCHOOL) is None
    assert index.add("c", WATER) is None
    match = index.check_and_add("d", MARKET_ONE_WORD)
    assert match is not None and match.key == "a" and 0.8 <= match.similarity < 1.0
    assert index.add("e", MARKET_PUNCT_CASE) == "a"
    assert len(index) == 3  # a near-duplicate is not indexed
    assert index.find(SCHOOL.replace("teel", "teeel")) is not None
    assert (
        index.find("Ndox mi dafa tàng lool, kenn manul naan ko ci bëccëg bi, waaye ci guddi gi mu sedd.")
        is None
    )


def test_short_texts_are_near_duplicates_only_up_to_case_and_punctuation() -> None:
    index = NearDuplicateIndex()
    assert index.add("1", "wol text 1") is None
    assert index.add("10", "wol text 10") is None  # 0.86 by 5-grams, but only three words
    assert index.add("x", "Wol text 1!") == "1"


def test_pairs_are_compared_on_both_sides() -> None:
    index = NearDuplicateIndex()
    assert index.add("pair", MARKET, MARKET_FR) is None
    assert index.add("pair-punct", MARKET_PUNCT_CASE, MARKET_FR.replace(",", "")) == "pair"
    assert index.add("other-translation", MARKET, OTHER_FR) is None  # a second reference, kept
    assert index.add("mono", MARKET) is None  # plain text is not a copy of a pair


def test_index_is_deterministic_and_seeded() -> None:
    texts = [MARKET, SCHOOL, WATER, MARKET_ONE_WORD, SCHOOL + " Waaw.", WATER.upper()]

    def decisions(seed: int) -> tuple[list[str | None], list[np.ndarray]]:
        index = NearDuplicateIndex(seed=seed)
        signatures = [index.signature(t) for t in texts]
        return [index.add(str(i), t) for i, t in enumerate(texts)], [s for s in signatures if s is not None]

    first, first_sigs = decisions(0)
    again, again_sigs = decisions(0)
    assert first == again == [None, None, None, "0", "1", "2"]
    assert all(np.array_equal(a, b) for a, b in zip(first_sigs, again_sigs, strict=True))
    assert not np.array_equal(decisions(1)[1][0], first_sigs[0])
    assert NearDuplicateIndex().signature("?!") is None


@pytest.mark.parametrize("unit, shingle", [("char", 5), ("word", 3), ("char", 1)])
def test_batched_signatures_equal_one_at_a_time(unit: str, shingle: int) -> None:
    # The build hashes in batches; the index and the tests use the one-record form: they must agree on
    # every kind of record, or a duplicate found one way is missed the other.
    records = [
        ("Nanga def? Maa ngi fi rekk, jërëjëf.", ""),
        ("ok", ""),  # shorter than one window
        ("", "An English pivot with no text beside it."),
        ("Mbaa yàgg nga fi?", "Have you been here long?"),
        ("...!?", ""),  # no letter: no signature
        ("", ""),
        ("Ɔ kɔ awlo lɛ ɔ wun i sɛ ɔ ti kpa 😀", "Il est rentré à la maison"),
        ("a", "b"),
        ("Habari za asubuhi", "..."),
    ]
    hasher = MinHasher(num_perm=32, shingle=shingle, shingle_unit=unit, min_words=3, seed=7)
    sigs, has, short = hasher.signatures(records)
    one_by_one = [hasher.signature(text, pivot) for text, pivot in records]
    assert has.tolist() == [sig is not None for sig, _ in one_by_one]
    assert short.tolist() == [is_short for _, is_short in one_by_one]
    expected = [sig for sig, _ in one_by_one if sig is not None]
    assert sigs.shape == (len(expected), 32) and sigs.dtype == np.uint32
    for batched, single in zip(sigs, expected, strict=True):
        np.testing.assert_array_equal(batched, single)


def _texts_with_near_duplicates(seed: int, n: int = 600) -> list[str]:
    """Short Wolof-looking lines, 30% of them an earlier line with one word changed."""
    rng = random.Random(seed)
    words = "ñaata waa dëkk bi ak jàng lekk naan xam dem ñëw ci ngir moo ma nga".split()
    texts: list[str] = []
    for _ in range(n):
        if texts and rng.random() < 0.3:
            base = rng.choice(texts).split()
            base[rng.randrange(len(base))] = rng.choice(words)
            texts.append(" ".join(base))
        else:
            texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(2, 12))))
    return texts


def test_chunked_decisions_equal_one_at_a_time() -> None:
    # The build's path (one vectorized lookup per chunk, rows sharing no band key in the chunk decided
    # "alone") gives the decisions of check_and_add one record at a time, chunk boundaries included.
    texts = _texts_with_near_duplicates(seed=5)
    one = NearDuplicateIndex()
    expected = [one.check_and_add(str(i), t) for i, t in enumerate(texts)]
    chunked = NearDuplicateIndex()
    sigs, has, short = chunked.hasher.signatures([(t, "") for t in texts])
    assert has.all()
    got: list[Match | None] = []
    shared = 0
    for lo in range(0, len(texts), 97):
        s, sh = sigs[lo : lo + 97], short[lo : lo + 97]
        keys = chunked.band_keys(s)
        best, similarity = chunked.match_flushed(s, sh, keys)
        sharing = chunked.sharing_rows(keys)
        shared += int(sharing.sum())
        for r in range(len(s)):
            got.append(chunked.check_and_add_signature(
                str(lo + r), s[r], bool(sh[r]), keys[r], (int(best[r]), float(similarity[r])), alone=not sharing[r]
            ))  # fmt: skip
        chunked.flush()
    assert got == expected and sum(m is not None for m in got) > 20
    assert 0 < shared < len(texts)  # both paths were taken


@pytest.mark.parametrize("pair_limit", [16, 0])
def test_chunk_decisions_equal_one_at_a_time(monkeypatch: pytest.MonkeyPatch, pair_limit: int) -> None:
    # The merge's path since issue 14 (decide_chunk): a chunk's exact duplicates and similar pairs found
    # at once, only the rows depending on earlier rows of the chunk decided in order; the same verdicts
    # and matches as one record at a time (a set of texts and check_and_add). PAIR_LIMIT 0: the
    # fallback, each row in turn against the index's pending records.
    from langkit.corpus import build as build_module
    from langkit.corpus.build import DUPLICATE, KEEP, NEAR_DUPLICATE, decide_chunk
    from langkit.corpus.shards import record_digest
    from langkit.corpus.stores import DigestSet

    monkeypatch.setattr(build_module, "PAIR_LIMIT", pair_limit)
    texts = _texts_with_near_duplicates(seed=7)
    texts += texts[::37]  # exact copies, some within one chunk, some across chunks
    one = NearDuplicateIndex()
    seen_texts: set[str] = set()
    expected: list[tuple[int, Match | None]] = []
    for i, t in enumerate(texts):
        if t in seen_texts:
            expected.append((DUPLICATE, None))
            continue
        match = one.check_and_add(str(i), t)
        if match is None:
            seen_texts.add(t)
        expected.append((KEEP, None) if match is None else (NEAR_DUPLICATE, match))
    chunked, seen = NearDuplicateIndex(), DigestSet()
    sigs, has, short = chunked.hasher.signatures([(t, "") for t in texts])
    assert has.all()
    digests = np.array([record_digest("wol_Latn", t, "") for t in texts], dtype=np.uint64)
    got: list[tuple[int, Match | None]] = []
    for lo in range(0, len(texts), 97):
        hi = min(lo + 97, len(texts))
        verdict, matches = decide_chunk(seen, chunked, [str(i) for i in range(lo, hi)], digests[lo:hi],
                                        np.ones(hi - lo, dtype=bool), sigs[lo:hi], short[lo:hi])  # fmt: skip
        got.extend((int(v), matches.get(r)) for r, v in enumerate(verdict.tolist()))
        seen.flush()
        chunked.flush()
    assert got == expected
    assert sum(v == NEAR_DUPLICATE for v, _ in got) > 10 and sum(v == DUPLICATE for v, _ in got) > 5
    # Both kinds of match: a record of an earlier chunk, and an earlier row of the same chunk.
    chunks = {(int(m.key) // 97 == i // 97) for i, (_, m) in enumerate(got) if m is not None}
    assert chunks == {True, False}
    assert len(chunked) == len(one) == sum(v == KEEP for v, _ in got)
    assert chunked.similar_pairs(sigs[:50], short[:50], chunked.band_keys(sigs[:50]), limit=0) is None


@pytest.mark.parametrize("small", [False, True])
def test_signature_store_reads_back_the_rows_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     small: bool) -> None:  # fmt: skip
    # Rows read from the file in runs of neighbours (repeats, gaps, any order) equal the rows in memory;
    # the sketch is the rows' low bytes. 70,000 rows: the first block grown several times; with small
    # blocks and reads, several blocks and many cut runs.
    from langkit.corpus import stores
    from langkit.corpus.stores import SignatureStore

    if small:
        monkeypatch.setattr(stores, "_BLOCK", 16_384)
        monkeypatch.setattr(stores, "_FIRST_BLOCK", 1_000)
        monkeypatch.setattr(stores, "_READ_ROWS", 50)

    rng = np.random.default_rng(0)
    rows = rng.integers(0, 2**32, size=(70_000, 8), dtype=np.uint32)
    on_disk, in_memory = SignatureStore(8, tmp_path / "sigs.bin"), SignatureStore(8)
    for lo in range(0, len(rows), 6_000):
        on_disk.extend(rows[lo : lo + 6_000])
        in_memory.extend(rows[lo : lo + 6_000])
    on_disk.append(rows[0])
    wanted = np.concatenate([rng.integers(0, len(rows), 500), [3, 3, 4, 40, 69_999, 70_000, 0]])
    expected = np.concatenate((rows, rows[:1]))[wanted]
    np.testing.assert_array_equal(on_disk.rows(wanted), expected)
    inside = wanted < len(rows)
    np.testing.assert_array_equal(in_memory.rows(wanted[inside]), expected[inside])
    np.testing.assert_array_equal(on_disk.sketch_rows(wanted), expected.astype(np.uint8))
    assert len(on_disk) == 70_001 and not in_memory.has_sketch
    on_disk.close()


@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_sketch_prefilter_changes_no_match_and_skips_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threshold: float
) -> None:
    # The file-backed index rejects candidates on their in-memory sketches before reading signatures:
    # the same matches as the in-memory index (which compares whole signatures), far fewer rows read.
    from langkit.corpus.stores import SignatureStore

    read: list[int] = []
    original = SignatureStore.rows

    def counting(self: SignatureStore, index: np.ndarray) -> np.ndarray:
        read.append(len(index))
        return original(self, index)

    monkeypatch.setattr(SignatureStore, "rows", counting)
    texts = _texts_with_near_duplicates(seed=11, n=2_000)
    results = []
    for index in (NearDuplicateIndex(threshold), NearDuplicateIndex(threshold, signature_file=tmp_path / "s.bin")):
        sigs, _, short = index.hasher.signatures([(t, "") for t in texts])
        read.clear()
        found = []
        for lo in range(0, len(texts), 250):
            s, sh = sigs[lo : lo + 250], short[lo : lo + 250]
            keys = index.band_keys(s)
            best, similarity = index.match_flushed(s, sh, keys)
            found.append((best.copy(), similarity.copy()))
            for r in range(len(s)):  # index them all, so that later chunks have many candidates
                index.check_and_add_signature(str(lo + r), s[r], bool(sh[r]), keys[r], alone=True)
            index.flush()
        results.append((found, sum(read)))
    (memory, memory_reads), (disk, disk_reads) = results
    for (b1, s1), (b2, s2) in zip(memory, disk, strict=True):
        np.testing.assert_array_equal(b1, b2)
        np.testing.assert_array_equal(s1, s2)
    assert sum(int((b >= 0).sum()) for b, _ in memory) > 100
    # Measured: 298 of 367 rows read at 0.5 (most candidates are that similar), 147 at 0.8.
    assert disk_reads < memory_reads * (0.5 if threshold == 0.8 else 0.9)


def test_decontaminator_prefilter_finds_what_every_window_finds() -> None:
    # The min_words-word heads only skip texts that cannot match: the same answer as trying every window.
    rng = random.Random(3)
    words = "a b c d e f".split()
    decon = Decontaminator(ngram=5, min_words=3)
    for i in range(6):
        decon.add(" ".join(rng.choice(words) for _ in range(rng.randint(1, 9))), f"test:{i}")

    def every_window(text: str) -> tuple[str, str] | None:
        w = dedup_text(text).split()
        if not w:
            return None
        if " ".join(w) in decon._short:
            return " ".join(w), decon._short[" ".join(w)]
        for k in sorted(decon._short_lengths):
            for i in range(len(w) - k + 1):
                if (g := " ".join(w[i : i + k])) in decon._short:
                    return g, decon._short[g]
        for i in range(len(w) - decon.ngram + 1):
            if (g := " ".join(w[i : i + decon.ngram])) in decon._ngrams:
                return g, decon._ngrams[g]
        return None

    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))) for _ in range(2000)]
    assert [decon.find(t) for t in texts] == [every_window(t) for t in texts]
    assert sum(decon.find(t) is not None for t in texts) > 20


def test_index_checks_its_settings() -> None:
    with pytest.raises(ValueError, match="multiple of bands"):
        NearDuplicateIndex(num_perm=100, bands=16)
    with pytest.raises(ValueError, match="threshold"):
        NearDuplicateIndex(threshold=0.0)


def test_decontaminator_matches_ngrams_contained_short_texts_and_exact_tiny_ones(tmp_path: Path) -> None:
    decon = Decontaminator(ngram=8, min_words=3)
    decon.add(SCHOOL, "test:1")  # 26 words: matched by any shared 8-gram
    decon.add("Dama xiif lool.", "test:2")  # 3 words: matched when contained whole
    decon.add("Bonjour.", "test:3")  # 1 word: matched only by an equal text
    # A training line that copies the test sentence inside a longer text, punctuation changed.
    copy = "Ci sunu téere bi: " + SCHOOL.lower().replace(",", "") + " Loolu mooy dund gi."
    assert decon.find(copy) == ("xale yi dañuy dem lekool ba suba teel", "test:1")
    assert decon.contaminated("Dafa am lu mu wax: dama xiif lool, ma ne ko.")
    assert not decon.contaminated("Dama xiif.")  # two of the three words only
    assert decon.contaminated("bonjour !")
    assert not decon.contaminated("Bonjour, comment allez-vous ?")  # a tiny text never matches inside
    assert not decon.contaminated(WATER)
    assert len(decon) == 3

    external = write(tmp_path / "devtest.wol", f"\ufeff{WATER}\n\nNdax mën nga ma dimbali tey?\n")
    assert decon.add_file(external) == 2
    assert decon.find("Waaw, ndax mën nga ma dimbali tey ci suba?") == (
        "ndax mën nga ma dimbali tey",
        f"{external}:3",
    )
    assert decon.contaminated(WATER)


# --------------------------------------------------------------------------------------------------
# Inside the corpus build
# --------------------------------------------------------------------------------------------------


def test_build_drops_near_duplicates_across_sources_with_a_pointer(tmp_path: Path) -> None:
    first = write(tmp_path / "a.txt", f"{MARKET}\n{SCHOOL}\n{WATER}\n")
    second = write(
        tmp_path / "b.txt", f"{MARKET_ONE_WORD}\nDistinct line: {WATER.replace('sedd', 'tàng')[:40]}\n"
    )
    third = write(tmp_path / "c.txt", f"{SCHOOL}\n{MARKET_PUNCT_CASE}\n")
    sources = [mono_source(first, "a"), mono_source(second, "b"), mono_source(third, "c")]

    def build(out: str) -> dict[str, Any]:
        return build_corpus(sources, ["wol_Latn"], tmp_path / out, dev_size=0, test_size=0, seed=0)

    stats = build("one")
    assert_accounting(stats)
    dropped = read_jsonl(tmp_path / "one" / "dropped.jsonl")
    assert [(d["source"], d["line"], d["reason"], d.get("duplicate_of")) for d in dropped] == [
        ("b", 1, "near_duplicate", "a:1"),  # one word changed
        ("c", 1, "duplicate", None),  # exact copy: the cheap hash step
        ("c", 2, "near_duplicate", "a:1"),  # case and punctuation changed
    ]
    assert dropped[0]["text"] == MARKET_ONE_WORD and 0.8 <= dropped[0]["similarity"] < 1.0
    by_name = {s["name"]: s for s in stats["sources"]}
    assert (by_name["b"]["kept"], by_name["b"]["dropped"]["near_duplicate"]) == (1, 1)
    assert (by_name["c"]["kept"], by_name["c"]["dropped"]["near_duplicate"]) == (0, 1)
    train = pq.read_table(tmp_path / "one" / "dataset" / "train.parquet").to_pylist()
    assert [r["id"] for r in train] == ["a:1", "a:2", "a:3", "b:2"]

    near = stats["languages"]["wol_Latn"]["near_duplicates"]
    assert near["indexed"] == 4
    assert [(s["dropped_id"], s["kept_id"], s["kept"]) for s in near["samples"]] == [
        ("b:1", "a:1", MARKET),
        ("c:2", "a:1", MARKET),
    ]
    assert "near_duplicate" in (tmp_path / "one" / "dataset" / "README.md").read_text(encoding="utf-8")

    build("two")  # the same decisions, byte for byte
    for name in ("dropped.jsonl", "stats.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_train_lines_containing_test_sentences_are_decontaminated(tmp_path: Path) -> None:
    """Whatever pairs the seeded split holds out, the monolingual lines quoting them leave train, the
    lines quoting train pairs stay, and dev and test keep their sizes."""
    sentences = [
        "Bés bu altine la ñu dem Ndakaaru ngir gis sunu mbokk yi fa dëkk.",
        "Xale yi dañuy fo ci biir pénc mi ba jant bi so.",
        "Sama baay moo jënd fas wu weex ci marse bu mag bi.",
        "Taw bi dafa bari ci at mii, tool yi naat nañu lool.",
        "Jàngalekat bi dafa wax ne ëllëg dañuy bind ay bataaxal.",
        "Ñaari jigéen yi ñoo togg ceebu jën bu neex ci ngoon si.",
        "Gaal gi dafa dugg ci géej gi ak ay nappkat yu bari.",
        "Doktoor bi dafa ni ma naan garab gi ñetti yoon ci bés.",
    ]
    pairs = tsv(tmp_path / "p.tsv", [(s, f"Phrase numéro {i} en français.") for i, s in enumerate(sentences)])
    quotes = write(tmp_path / "m.txt", "".join(f"Mu ne: «{s}» Loolu la wax.\n" for s in sentences))
    stats = build_corpus(
        [pair_source(pairs), mono_source(quotes, "quotes")], ["wol_Latn"], tmp_path / "out",
        dev_size=2, test_size=3, seed=0,
    )  # fmt: skip
    assert_accounting(stats)
    held_out = {
        r["text"]
        for split in ("dev", "test")
        for r in pq.read_table(tmp_path / "out" / "dataset" / f"{split}.parquet").to_pylist()
    }
    assert len(held_out) == 5
    assert stats["languages"]["wol_Latn"]["splits"] == {"train": 3 + 3, "dev": 2, "test": 3}
    dropped = read_jsonl(tmp_path / "out" / "dropped.jsonl")
    assert {d["reason"] for d in dropped} == {"decontaminated"}
    assert sorted(d["line"] for d in dropped) == sorted(sentences.index(s) + 1 for s in held_out)
    for d in dropped:
        assert d["source"] == "quotes" and d["overlaps"].split(":")[0] in ("dev", "test")
        assert d["overlap"] in dedup_text(d["text"])
    by_name = {s["name"]: s for s in stats["sources"]}
    assert by_name["quotes"]["dropped"]["decontaminated"] == 5 and by_name["quotes"]["kept"] == 3
    train = pq.read_table(tmp_path / "out" / "dataset" / "train.parquet").to_pylist()
    assert not any(s in r["text"] for r in train for s in held_out)


def test_external_decontamination_file_from_the_config(tmp_path: Path) -> None:
    write(tmp_path / "mono.txt", f"{MARKET}\nSama xarit dafa wax ne: {WATER}\n{SCHOOL}\n")
    (tmp_path / "eval").mkdir()
    write(tmp_path / "eval" / "devtest.wol", f"{WATER}\n")
    config = write(
        tmp_path / "run.yaml",
        "languages: [wol_Latn]\n"
        "corpus:\n"
        "  dev_size: 0\n"
        "  test_size: 0\n"
        "  dedup: {decontaminate_against: [eval/devtest.wol]}\n"
        "  sources:\n"
        "    - {path: mono.txt, format: text, language: wol_Latn, name: mono, license: CC-BY-4.0}\n",
    )
    cfg = load_config(config)
    assert cfg.corpus.dedup.decontaminate_against == [str(tmp_path / "eval" / "devtest.wol")]
    run_dir = RunDir(tmp_path / "run")
    run(cfg, run_dir)
    dropped = read_jsonl(run_dir.corpus / "dropped.jsonl")
    assert [(d["line"], d["reason"], d["overlaps"]) for d in dropped] == [
        (2, "decontaminated", f"{tmp_path / 'eval' / 'devtest.wol'}:1")
    ]
    stats = json.loads((run_dir.corpus / "stats.json").read_text(encoding="utf-8"))
    assert_accounting(stats)
    assert stats["steps"]["dedup"]["decontaminate_against"] == cfg.corpus.dedup.decontaminate_against

    cfg.corpus.dedup.decontaminate_against = [str(tmp_path / "missing.txt")]
    with pytest.raises(FileNotFoundError, match=r"corpus\.dedup\.decontaminate_against\[0\]"):
        run(cfg, RunDir(tmp_path / "run2"))


def test_dedup_steps_can_be_switched_off(tmp_path: Path) -> None:
    mono = write(tmp_path / "m.txt", f"{MARKET}\n{MARKET_ONE_WORD}\n")
    pairs = tsv(tmp_path / "p.tsv", [(MARKET_PUNCT_CASE, "Une phrase.")])
    cfg = config_from_dict(
        {
            "languages": ["wol_Latn"],
            "corpus": {
                "dev_size": 0,
                "test_size": 1,
                "dedup": {"near_duplicates": False, "decontaminate": False},
            },
        }
    )
    cfg.corpus.sources = [pair_source(pairs), mono_source(mono, "mono")]
    run_dir = RunDir(tmp_path / "run")
    run(cfg, run_dir)
    stats = json.loads((run_dir.corpus / "stats.json").read_text(encoding="utf-8"))
    assert_accounting(stats)
    assert stats["splits"] == {"train": 2, "dev": 0, "test": 1}
    assert "near_duplicates" not in stats["languages"]["wol_Latn"]


@pytest.mark.parametrize(
    ("dedup", "message"),
    [
        ({"bands": 10}, "corpus.dedup.num_perm must be a positive multiple of corpus.dedup.bands"),
        ({"threshold": 1.5}, "corpus.dedup.threshold"),
        ({"shingle_unit": "byte"}, "corpus.dedup.shingle_unit"),
        ({"ngram": 0}, "corpus.dedup.ngram"),
        ({"decontaminate_min_words": 9}, "corpus.dedup.decontaminate_min_words"),
        ({"thresold": 0.9}, "unknown config key 'corpus.dedup.thresold'"),
    ],
)
def test_dedup_config_errors_name_the_dotted_key(dedup: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
        config_from_dict({"corpus": {"dedup": dedup}})


def test_overlaps_found_in_worker_processes_equal_a_plain_loop(tmp_path: Path) -> None:
    # The build's decontamination pass: a spool of several row groups checked in pieces, in this
    # process or by a pool of spawned workers (which load the decontaminator from a file), finds the
    # same contaminated training records as Decontaminator.find on every row; held-out rows skipped.
    from langkit.corpus import build as build_module
    from langkit.corpus.build import ParquetRows, _find_overlaps
    from langkit.corpus.shards import worker_pool

    texts = _texts_with_near_duplicates(seed=13, n=700)
    spool = tmp_path / "kept-wol_Latn.parquet"
    rows = ParquetRows(spool, group_rows=64, compression="none")
    for i, text in enumerate(texts):
        rows.append((f"s:{i}", "wol_Latn", text, "fra_Latn" if i % 3 == 0 else "", "le marché" if i % 3 == 0 else "",
                     "s", "CC0-1.0", "f", i, []))  # fmt: skip
    rows.close()
    decontaminator = Decontaminator(ngram=4, min_words=3)
    for text in texts[:20]:
        decontaminator.add(text, "test")
    decontaminator.add("le marché", "pivot")

    class Spool:  # what _find_overlaps reads of a language's merge state
        spool_path = spool

    held = set(range(10))
    expected = {}
    for i, text in enumerate(texts):
        if i in held:
            continue
        found = decontaminator.find(text) or (decontaminator.find("le marché") if i % 3 == 0 else None)
        if found is not None:
            expected[i] = found
    state: dict[str, Any] = {"wol_Latn": Spool()}
    chosen = {"wol_Latn": (set(range(5)), set(range(5, 10)))}
    here = _find_overlaps(state, chosen, decontaminator, tmp_path, None)
    with worker_pool(2) as pool:
        there = _find_overlaps(state, chosen, decontaminator, tmp_path, pool)
    assert here == there == {"wol_Latn": expected}
    assert 0 < len(expected) < len(texts) - 10
    assert len(texts) // 64 > build_module.OVERLAP_GROUPS  # several pieces
    assert _find_overlaps(state, chosen, None, tmp_path, None) == {"wol_Latn": {}}
