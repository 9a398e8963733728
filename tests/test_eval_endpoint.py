"""The endpoint system (openai:URL@MODEL) against a real OpenAI-compatible server on this machine: no mocks."""

from __future__ import annotations

import threading
import time

import pytest

from langkit.evaluate.endpoint import EndpointError, EndpointSystem, parse_endpoint_spec
from langkit.serve import free_port, start_server

SOURCES = [
    "Le marché ouvre à huit heures.", "Les enfants vont à l'école.", "Il pleut depuis ce matin.",
    "Mon frère travaille au port.", "Nous mangeons du riz ce soir.", "La route est longue.",
    "Bonjour, comment allez-vous ?", "Le train part demain.", "L'eau est froide.", "Elle lit un livre.",
]
ITEMS = list(enumerate(SOURCES))


def run(system: EndpointSystem, items=ITEMS) -> tuple[dict[int, str], set[int]]:
    outputs: dict[int, str] = {}
    threads: set[int] = set()

    def emit(index: int, text: str) -> None:
        assert index not in outputs
        outputs[index] = text
        threads.add(threading.get_ident())

    system.translate("fra_Latn", "wol_Latn", items, emit)
    return outputs, threads


@pytest.fixture(scope="module")
def reference(tiny_server) -> dict[int, str]:
    with EndpointSystem("served", tiny_server.base_url, tiny_server.model, concurrency=1, max_tokens=12) as system:
        outputs, threads = run(system)
    assert threads == {threading.get_ident()}  # emitted in the calling thread
    return outputs


def test_parse_endpoint_spec():
    assert parse_endpoint_spec("openai:http://127.0.0.1:8000/v1@openai/gpt-oss-20b") == (
        "http://127.0.0.1:8000/v1", "openai/gpt-oss-20b")
    assert parse_endpoint_spec("http://u:p@host/v1/@m") == ("http://u:p@host/v1", "m")  # the model after the last @
    for bad in ("openai:http://127.0.0.1:8000/v1", "openai:127.0.0.1:8000@m", "openai:http://h/v1@", "openai:@m"):
        with pytest.raises(ValueError, match="does not parse"):
            parse_endpoint_spec(bad)


def test_translates_one_line_each_and_concurrency_does_not_change_outputs(tiny_server, reference, monkeypatch):
    assert sorted(reference) == list(range(len(SOURCES)))
    assert all(text and "\n" not in text and "<|" not in text for text in reference.values())
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-test")
    with EndpointSystem("served", tiny_server.base_url, tiny_server.model, concurrency=8, max_tokens=12) as system:
        outputs, threads = run(system)
        info = system.info()
    assert outputs == reference
    assert threads == {threading.get_ident()}
    assert info["kind"] == "openai" and info["model"] == tiny_server.model and info["concurrency"] == 8
    assert "sk-secret-test" not in repr(info)


def test_connection_refused_fails_quickly_naming_system_and_direction():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    emitted: list[int] = []
    start = time.monotonic()
    with EndpointSystem("nowhere", url, "m", retries=2, backoff=0.05, timeout=5) as system:
        with pytest.raises(EndpointError, match=r"system nowhere .*direction fra_Latn-wol_Latn.*3 tries.*connection"):
            system.translate("fra_Latn", "wol_Latn", ITEMS, lambda i, _: emitted.append(i))
    assert emitted == [] and time.monotonic() - start < 10


def test_client_errors_are_not_retried(tiny_server):
    with EndpointSystem("wrong-model", tiny_server.base_url, "no-such-model", retries=3, backoff=5) as system:
        start = time.monotonic()
        with pytest.raises(EndpointError, match=r"wrong-model .*1 try: HTTP 4\d\d"):
            system.translate("fra_Latn", "wol_Latn", ITEMS[:2], lambda i, _: None)
    assert time.monotonic() - start < 5  # no back-off was slept


def test_timeout_is_an_error_naming_the_direction(tiny_server):
    with EndpointSystem("slow", tiny_server.base_url, tiny_server.model, retries=1, backoff=0.01,
                        timeout=0.001, max_tokens=12) as system:
        with pytest.raises(EndpointError, match=r"direction wol_Latn-fra_Latn.*timed out"):
            system.translate("wol_Latn", "fra_Latn", ITEMS[:1], lambda i, _: None)


@pytest.mark.slow
def test_server_killed_mid_run_keeps_what_finished(tiny_server, reference):
    """A second server on the same folder is SIGKILLed after the first answer: the error names the system and
    the direction, and every segment that finished was emitted, with the output an uninterrupted run gives."""
    emitted: dict[int, str] = {}
    with start_server(tiny_server.model, startup_timeout=300) as server:
        def emit(index: int, text: str) -> None:
            emitted[index] = text
            if len(emitted) == 1:
                server.kill()

        with EndpointSystem("doomed", server.base_url, server.model, concurrency=2, retries=2, backoff=0.05,
                            max_tokens=12) as system:
            with pytest.raises(EndpointError, match=r"system doomed .*direction fra_Latn-wol_Latn"):
                system.translate("fra_Latn", "wol_Latn", ITEMS, emit)
    assert 1 <= len(emitted) < len(ITEMS)
    assert emitted == {i: reference[i] for i in emitted}
