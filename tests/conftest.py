"""Shared fixtures. Every test runs offline: nothing may reach the Hugging Face Hub."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Every cache the tests fill (langkit's rebuilt tokenizer and pivot guard, the Hugging Face hub, datasets and
# evaluate caches, matplotlib's font list, compiled kernels) goes under one temporary folder, removed when the
# run ends: tests never write into the user's own caches. Subprocesses started by tests inherit it. Set
# LANGKIT_TEST_CACHE to a folder of your own to keep it between runs (it is then left in place).
if os.environ.get("LANGKIT_TEST_CACHE"):
    TEST_CACHE = Path(os.environ["LANGKIT_TEST_CACHE"]).resolve()
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
else:
    TEST_CACHE = Path(tempfile.mkdtemp(prefix="langkit-test-cache-"))
    atexit.register(shutil.rmtree, TEST_CACHE, ignore_errors=True)
for variable, folder in {
    "LANGKIT_CACHE": "langkit", "XDG_CACHE_HOME": "xdg", "HF_HOME": "huggingface",
    "HF_HUB_CACHE": "huggingface/hub", "HF_ASSETS_CACHE": "huggingface/assets",
    "HF_DATASETS_CACHE": "huggingface/datasets", "MPLCONFIGDIR": "matplotlib", "TRITON_CACHE_DIR": "triton",
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor", "SACREBLEU": "sacrebleu",
}.items():  # fmt: skip
    os.environ[variable] = str(TEST_CACHE / folder)

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LANGKIT_NO_PROGRESS", "1")

import pytest  # noqa: E402

from langkit.tokenizer import extend_tokenizer, load_base_tokenizer  # noqa: E402

# A few lines per language, written for the tests (illustrative, not validated language data).
SAMPLE_TEXT = {
    "wol_Latn": [
        "Nanga def? Maa ngi fi rekk, jërëjëf.",
        "Ñaata la mburu mi jar ci marse bi?",
        "Sama yaay dafa dem ca tool ba ngir bey gerte.",
        "Ndox mi dafa sedd, naan ko ci kaas bi.",
    ] * 3,
    "bci_Latn": [
        "Akwaba! A ti kpa?",
        "Ɔ kɔ gua su kɛ ɔ́ tɔ́ aliɛ.",
        "Min klo nzue, ɛ fa man min.",
        "Be kɔ suklu nɲanmiɛn kpɛ nga.",
    ] * 3,
    "swh_Latn": [
        "Habari za asubuhi? Nzuri sana, asante.",
        "Ng'ombe wetu wanakunywa maji mtoni.",
        "Watoto wanakwenda shuleni kila siku.",
        "Bei ya mkate sokoni imepanda leo.",
    ] * 3,
    "lin_Latn": [
        "Mbote! Ozali malamu? Nazali malamu, matɔndɔ.",
        "Mama akei na zando mpo na kosomba mbisi.",
        "Bana bazali kotánga na eteyelo.",
        "Mai ezali malili, mɛlɛ yango na kopo.",
    ] * 3,
}


@pytest.fixture(scope="session")
def base_tokenizer():
    """The real gpt-oss tokenizer (o200k_harmony), rebuilt offline and cached."""
    return load_base_tokenizer()


@pytest.fixture(scope="session")
def extended_tokenizer(base_tokenizer, tmp_path_factory):
    """(tokenizer, new_tokens, folder): the base extended with 40 merges learned on SAMPLE_TEXT."""
    out = tmp_path_factory.mktemp("extended_tokenizer")
    tokenizer, new_tokens = extend_tokenizer(base_tokenizer, SAMPLE_TEXT, budget=40, out_dir=out, min_frequency=2)
    return tokenizer, new_tokens, out


@pytest.fixture(scope="session")
def tiny_server(base_tokenizer, tmp_path_factory):
    """A real OpenAI-compatible server (transformers serve, CPU, loopback) on the tiny gpt-oss model with the
    base tokenizer and the harmony chat template; its ``model`` is the served folder. Stopped at the end."""
    from langkit.models import build_random_model
    from langkit.serve import start_server, write_servable

    folder = write_servable(build_random_model("tiny"), base_tokenizer, tmp_path_factory.mktemp("served") / "model")
    with start_server(folder, startup_timeout=300) as server:
        yield server
