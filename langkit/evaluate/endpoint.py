"""A system served behind an OpenAI-compatible chat endpoint (vLLM, llama.cpp's server, Ollama, ``transformers
serve``, ``langkit serve``), spelled ``openai:URL@MODEL`` on the command line.

Each segment is one chat request through the official ``openai`` client: a short system message and the user
message :func:`langkit.harmony.translation_request`, greedy (temperature 0). Up to ``concurrency`` requests are
in flight at once (threads); each result is handed to the caller in the caller's own thread as soon as it is
back, so the caller can cache it before the next one arrives. Connection errors, timeouts, 429 and 5xx answers
are retried with exponential back-off; when a segment still fails, the requests not yet sent are dropped, those
in flight are waited for (and handed over), and :class:`EndpointError` names the system, the direction and
the cause.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlparse

from langkit.harmony import SYSTEM_MESSAGE, translation_request
from langkit.utils import get_logger

log = get_logger("evaluate.endpoint")

# The identity line of langkit's harmony system message: a model served by ``langkit serve`` then sees exactly
# the prompt it was trained on (its chat template adds gpt-oss's channel lines); any other model reads a plain
# instruction.
ENDPOINT_SYSTEM_MESSAGE = SYSTEM_MESSAGE.partition("\n")[0]
RETRYABLE_STATUS = frozenset({408, 429})  # and every 5xx


class EndpointError(RuntimeError):
    """A segment could not be translated by an endpoint after its retries."""


class _Failed(Exception):
    """A request's last error and how many tries it was given."""

    def __init__(self, err: BaseException, tries: int) -> None:
        super().__init__(str(err))
        self.err, self.tries = err, tries


def parse_endpoint_spec(spec: str) -> tuple[str, str]:
    """``[openai:]URL@MODEL`` -> (base URL, model). The model follows the last ``@`` (a URL may hold one)."""
    body = spec[len("openai:"):] if spec.startswith("openai:") else spec
    url, sep, model = body.rpartition("@")
    parsed = urlparse(url)
    if not sep or not model or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"endpoint system {spec!r} does not parse: expected openai:URL@MODEL, e.g. "
                         "openai:http://127.0.0.1:8000/v1@openai/gpt-oss-20b")
    return url.rstrip("/"), model


def _retryable(err: BaseException) -> bool:
    import openai

    if isinstance(err, openai.APIConnectionError):  # refused, reset, and timeouts (APITimeoutError)
        return True
    if isinstance(err, openai.APIStatusError):
        return err.status_code in RETRYABLE_STATUS or err.status_code >= 500
    return False


def _describe(err: BaseException) -> str:
    import openai

    if isinstance(err, openai.APITimeoutError):
        return "the request timed out"
    if isinstance(err, openai.APIConnectionError):
        cause = err.__cause__ or err.__context__
        return f"connection failed ({cause})" if cause else "connection failed"
    if isinstance(err, openai.APIStatusError):
        return f"HTTP {err.status_code}: {err.message}"
    return f"{type(err).__name__}: {err}"


class EndpointSystem:
    """Translations from an OpenAI-compatible chat endpoint (see the module's docstring)."""

    kind = "openai"

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        *,
        concurrency: int = 4,
        retries: int = 4,
        timeout: float = 120.0,
        max_tokens: int = 256,
        api_key: str | None = None,
        backoff: float = 1.0,
        system_message: str = ENDPOINT_SYSTEM_MESSAGE,
    ) -> None:
        """``retries``: tries after the first (so ``retries + 1`` in all); ``backoff``: seconds before the first
        retry, doubled for each next one (at most 60 s); ``timeout``: seconds per request; ``max_tokens``:
        the longest answer, in tokens. The key comes from ``api_key``, else ``OPENAI_API_KEY``, else ``EMPTY``
        (what local servers accept)."""
        import openai

        if concurrency < 1:
            raise ValueError(f"system {name}: concurrency must be >= 1, got {concurrency}")
        if retries < 0:
            raise ValueError(f"system {name}: retries must be >= 0, got {retries}")
        if timeout <= 0 or max_tokens < 1 or backoff < 0:
            raise ValueError(f"system {name}: timeout and max_tokens must be > 0 and backoff >= 0")
        self.name, self.base_url, self.model = name, base_url.rstrip("/"), model
        self.concurrency, self.retries, self.timeout = concurrency, retries, timeout
        self.max_tokens, self.backoff, self.system_message = max_tokens, backoff, system_message
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        # The client's own retries are off: ours name the system and direction, and tests can make them short.
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=0)

    @classmethod
    def from_spec(cls, name: str, spec: str, **kwargs: Any) -> EndpointSystem:
        """From ``openai:URL@MODEL`` (see :func:`parse_endpoint_spec`)."""
        url, model = parse_endpoint_spec(spec)
        return cls(name, url, model, **kwargs)

    def info(self) -> dict[str, Any]:
        """Where the outputs came from, for results.json (never the key)."""
        return {
            "kind": self.kind, "url": self.base_url, "model": self.model, "temperature": 0.0,
            "max_tokens": self.max_tokens, "concurrency": self.concurrency, "retries": self.retries,
            "timeout_s": self.timeout, "system_message": self.system_message,
        }

    # ----- one request -----

    def _request(self, source_language: str, target_language: str, text: str) -> str:
        from langkit.evaluate import one_line
        from langkit.serve import final_channel

        response = self._client.chat.completions.create(
            model=self.model,
            messages=[
                {"role": "system", "content": self.system_message},
                {"role": "user", "content": translation_request(source_language, target_language, text)},
            ],
            temperature=0.0,
            max_tokens=self.max_tokens,
        )
        if not response.choices:
            raise ValueError("the answer holds no choices")
        content = response.choices[0].message.content or ""  # None: the model wrote no final-channel text
        return one_line(final_channel(content))

    def _with_retries(self, source_language: str, target_language: str, text: str, stop: threading.Event) -> str:
        attempt = 0
        while True:
            try:
                return self._request(source_language, target_language, text)
            except Exception as err:
                if not _retryable(err) or attempt >= self.retries or stop.is_set():
                    raise _Failed(err, attempt + 1) from err
                delay = min(self.backoff * 2**attempt, 60.0)
                attempt += 1
                log.debug("%s: %s; retry %d/%d in %.2f s", self.name, _describe(err), attempt, self.retries, delay)
                if stop.wait(delay):  # another segment failed for good: give up now
                    raise _Failed(err, attempt) from err

    # ----- the public call -----

    def translate(self, source_language: str, target_language: str, items: Sequence[tuple[int, str]],
                  emit: Callable[[int, str], None]) -> None:
        """Translate each ``(segment index, source text)``; ``emit(index, output)`` is called in this thread as
        each one comes back (in completion order). Raises :class:`EndpointError` once a segment has failed its
        retries, after emitting every segment that did finish."""
        direction = f"{source_language}-{target_language}"
        if not items:
            return
        stop = threading.Event()
        failure: tuple[int, _Failed] | None = None
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"endpoint-{self.name}")
        try:
            pending: dict[Future[str], int] = {
                pool.submit(self._with_retries, source_language, target_language, text, stop): index
                for index, text in items
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    if future.cancelled():
                        continue
                    err = future.exception()
                    if err is None:
                        emit(index, future.result())
                    elif failure is None:
                        failure = (index, err if isinstance(err, _Failed) else _Failed(err, 1))
                        stop.set()  # no new retries; requests not yet started are dropped
                        for other in pending:
                            other.cancel()
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
        if failure is not None:
            index, failed = failure
            tries = f"{failed.tries} tries" if failed.tries > 1 else "1 try"
            raise EndpointError(f"system {self.name} ({self.base_url}, model {self.model}), direction {direction}: "
                                f"segment {index} failed after {tries}: {_describe(failed.err)}") from failed.err

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> EndpointSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
