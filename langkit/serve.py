"""Serving a gpt-oss model (a langkit run, or any folder) behind an OpenAI-compatible chat endpoint.

Two parts:

* :func:`write_servable` / :func:`servable_from_run` write a folder any server can load: the weights (a run's
  adapter merged into its base with PEFT's ``merge_and_unload``: vLLM does not serve LoRA on gpt-oss's
  experts), the tokenizer with a harmony chat template (:data:`HARMONY_CHAT_TEMPLATE`), and a generation
  config that stops at ``<|return|>``, ``<|end|>`` and ``<|call|>``.
* :func:`start_server` launches a real server on that folder as a subprocess and waits until it answers:
  vLLM where it is installed and a GPU is there, else ``transformers serve`` (transformers' own FastAPI
  server, CPU or GPU). :class:`ServerHandle` stops it (also as a context manager).

The chat template ends the prompt with ``<|start|>assistant<|channel|>final<|message|>``, the prefill langkit
trains with (:func:`langkit.harmony.render_prompt`): the model answers straight in the ``final`` channel, so
what a server returns as the message content is the final-channel text, and a chat request with the system
message :data:`SYSTEM_IDENTITY` renders exactly the prompt ``langkit eval`` generates from.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langkit.harmony import STOP_TOKENS, SYSTEM_MESSAGE
from langkit.utils import get_logger, replace_dir, temp_dir

log = get_logger("serve")

# langkit's harmony system message is an identity line followed by the lines gpt-oss expects in every system
# message (reasoning effort, valid channels). A client sends the identity (or its own); the template adds the rest.
SYSTEM_IDENTITY, _, _HARMONY_SYSTEM_TAIL = SYSTEM_MESSAGE.partition("\n")
FINAL_PREFILL = "<|start|>assistant<|channel|>final<|message|>"
SERVE_STOP_TOKENS = (*STOP_TOKENS, "<|call|>")

# Jinja, as transformers' apply_chat_template (and vLLM, which uses the tokenizer's template) renders it.
# Message content may be a string or a list of {"type": "text", "text": ...} parts (transformers serve sends parts).
HARMONY_CHAT_TEMPLATE = (
    "{%- macro text(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for part in content -%}{%- if part.type == 'text' -%}{{ part.text }}{%- endif -%}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{%- set identity = namespace(value=" + json.dumps(SYSTEM_IDENTITY) + ") -%}"
    "{%- if messages and messages[0].role == 'system' -%}{%- set identity.value = text(messages[0].content) -%}{%- endif -%}"
    "{%- set harmony_tail = " + json.dumps("\n" + _HARMONY_SYSTEM_TAIL) + " -%}"
    "<|start|>system<|message|>{{ identity.value }}{{ harmony_tail }}<|end|>"
    "{%- for message in messages -%}"
    "{%- if message.role == 'developer' -%}"
    "<|start|>developer<|message|># Instructions{{ '\\n\\n' }}{{ text(message.content) }}<|end|>"
    "{%- elif message.role == 'user' -%}"
    "<|start|>user<|message|>{{ text(message.content) }}<|end|>"
    "{%- elif message.role == 'assistant' -%}"
    "<|start|>assistant<|channel|>final<|message|>{{ text(message.content) }}<|end|>"
    "{%- elif message.role != 'system' or not loop.first -%}"
    "{{ raise_exception('the harmony template takes system (first), developer, user and assistant messages, not ' + message.role) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}" + FINAL_PREFILL + "{%- endif -%}"
)


class ServerError(RuntimeError):
    """The server did not start, or stopped answering."""


def final_channel(text: str) -> str:
    """The final-channel answer of a harmony completion. A server that parses harmony (vLLM, or transformers
    serve with the template above) returns it as is; raw harmony text (special tokens written out) is cut to
    what follows the last ``<|channel|>final<|message|>``, up to its stop token."""
    marker = "<|channel|>final<|message|>"
    if marker in text:
        text = text.rsplit(marker, 1)[1]
    for stop in SERVE_STOP_TOKENS:
        text = text.split(stop, 1)[0]
    return text.strip()


# --------------------------------------------------------------------------------------------------
# A folder any server loads
# --------------------------------------------------------------------------------------------------


def write_servable(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """Save ``model`` (a plain transformers model: merge an adapter first) and ``tokenizer`` with the harmony
    chat template into ``out_dir`` (written beside, then renamed in). Returns the folder. The model's
    generation config is set for serving (greedy, harmony stop tokens, cache on); the tokenizer is left as it was."""
    from transformers import GenerationConfig

    dest = Path(out_dir)
    stop_ids = [tokenizer.convert_tokens_to_ids(t) for t in SERVE_STOP_TOKENS]
    if any(i is None or i == tokenizer.unk_token_id for i in stop_ids):
        raise ValueError(f"tokenizer does not know the harmony stop tokens {SERVE_STOP_TOKENS}")
    model.config.use_cache = True  # training turns the cache off; serving wants it
    model.generation_config = GenerationConfig(
        eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0],
        bos_token_id=getattr(model.config, "bos_token_id", None), do_sample=False,
    )
    tmp = temp_dir(dest)
    model.save_pretrained(str(tmp), safe_serialization=True)
    previous = tokenizer.chat_template
    tokenizer.chat_template = HARMONY_CHAT_TEMPLATE
    try:
        tokenizer.save_pretrained(str(tmp))
    finally:
        tokenizer.chat_template = previous  # the caller's tokenizer is left as it was
    replace_dir(tmp, dest)
    log.info("servable model written to %s", dest)
    return dest


def servable_from_run(run: str | Path, out_dir: str | Path | None = None) -> Path:
    """A langkit run directory made servable: its base with the trained adapter merged in, the extended
    tokenizer, the harmony chat template. Written to ``out_dir`` (default ``RUN/serve/model``)."""
    from langkit.config import load_config
    from langkit.rundir import RunDir
    from langkit.train import load_adapted_model

    run_dir = RunDir(Path(run))
    cfg = load_config(run_dir.require(run_dir.config, "corpus"))
    model, tokenizer = load_adapted_model(run_dir, cfg)
    merged = model.merge_and_unload()
    return write_servable(merged, tokenizer, out_dir if out_dir is not None else run_dir.root / "serve" / "model")


# --------------------------------------------------------------------------------------------------
# Starting and stopping a server
# --------------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def vllm_available() -> bool:
    """vLLM is installed and a CUDA GPU is visible."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


@dataclass
class ServerHandle:
    """A running server. ``base_url`` is what an OpenAI client takes (``http://HOST:PORT/v1``); ``model`` the
    name requests must give."""

    process: subprocess.Popen[bytes]
    base_url: str
    model: str
    backend: str
    log_path: Path
    _log_file: Any = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server and everything it started (it runs in its own process group: transformers serve
        runs the model in a child process)."""
        if self.running:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            try:  # the server is gone; its model process may not be
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        """SIGKILL the server's whole process group at once (a crash, for tests)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_command(model_dir: Path, host: str, port: int, backend: str, *, device: str = "cpu",
                   dtype: str = "auto", model_name: str | None = None, extra_args: Sequence[str] = ()) -> list[str]:
    """The command line that serves ``model_dir`` on ``host:port`` with ``backend`` (``vllm`` or
    ``transformers``), ``extra_args`` appended (the server's own options)."""
    if backend == "vllm":
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--host", host, "--port", str(port), "--dtype", dtype]
        if model_name:
            cmd += ["--served-model-name", model_name]
        return [*cmd, *extra_args]
    if backend == "transformers":
        # The model given on the command line is loaded at start and is the only one served; requests name it by
        # that same string (transformers serve has no served-model-name option).
        return [sys.executable, "-m", "transformers.cli.transformers", "serve", str(model_dir), "--host", host,
                "--port", str(port), "--device", device, "--dtype", dtype, "--log-level", "warning", *extra_args]
    raise ValueError(f"unknown server backend {backend!r}: vllm or transformers")


def _get(url: str, timeout: float) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _chat_ping(base_url: str, model: str, timeout: float) -> None:
    """One tiny chat request: the server has loaded the model and can answer."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1,
                       "temperature": 0}).encode()
    request = urllib.request.Request(f"{base_url}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        json.load(response)


def start_server(
    model_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    backend: str = "auto",
    device: str = "cpu",
    dtype: str = "auto",
    model_name: str | None = None,
    startup_timeout: float = 300.0,
    log_path: str | Path | None = None,
    env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> ServerHandle:
    """Serve ``model_dir`` (see :func:`write_servable`) and return once a chat request gets an answer.

    ``port=0`` picks a free port. ``backend``: ``auto`` (vLLM when installed with a GPU, else transformers
    serve), ``vllm`` or ``transformers``. ``model_name`` names the model for vLLM; transformers serve names it by
    its folder path. ``extra_args`` go to the server's command line as they are (e.g. transformers serve's
    ``--continuous-batching``, vLLM's ``--tensor-parallel-size 2``). The server's output goes to ``log_path`` (default: a temporary file); if it exits or does
    not answer within ``startup_timeout`` seconds, it is stopped and :class:`ServerError` carries its log's tail.
    """
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} holds no config.json: not a model folder (see langkit.serve.write_servable)")
    if backend == "auto":
        backend = "vllm" if vllm_available() else "transformers"
    if backend == "transformers" and (shutil.which("uvicorn") is None and importlib.util.find_spec("uvicorn") is None
                                      or importlib.util.find_spec("fastapi") is None):
        raise ServerError("transformers serve needs fastapi and uvicorn: pip install 'langkit[serve]'")
    port = port or free_port(host)
    name = model_name if (backend == "vllm" and model_name) else str(model_dir)
    cmd = server_command(model_dir, host, port, backend, device=device, dtype=dtype, model_name=model_name,
                         extra_args=extra_args)
    if log_path:
        log_file_path, log_file = Path(log_path), open(log_path, "wb")  # closed by ServerHandle.stop
    else:
        fd, name_of_log = tempfile.mkstemp(prefix="langkit-serve-", suffix=".log")
        log_file_path, log_file = Path(name_of_log), os.fdopen(fd, "wb")
    child_env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), **(env or {})}
    log.info("starting %s on %s:%d: %s", backend, host, port, " ".join(cmd))
    try:
        process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=child_env,
                                   start_new_session=True)
    except BaseException:
        log_file.close()
        raise
    handle = ServerHandle(process, f"http://{'[' + host + ']' if ':' in host else host}:{port}/v1", name, backend,
                          log_file_path, log_file)
    deadline = time.monotonic() + startup_timeout
    root = handle.base_url[: -len("/v1")]
    last_error = "no answer yet"
    try:
        while True:
            if not handle.running:
                raise ServerError(f"{backend} server exited with code {process.returncode} before answering "
                                  f"(command: {' '.join(cmd)}); its log ({log_file_path}) ends:\n{handle.log_tail()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerError(f"{backend} server on {root} did not answer within {startup_timeout:.0f} s "
                                  f"({last_error}); its log ({log_file_path}) ends:\n{handle.log_tail()}")
            try:
                status = _get(f"{root}/health", timeout=min(5.0, left))
                if status == 200:
                    _chat_ping(handle.base_url, name, timeout=max(1.0, deadline - time.monotonic()))
                    break
                last_error = f"/health answered {status}"
            except (OSError, ValueError) as err:  # refused while it starts; URLError and timeouts are OSErrors
                last_error = f"{type(err).__name__}: {err}"
            time.sleep(0.25)
    except BaseException:
        handle.stop()
        raise
    log.info("%s server ready at %s (model %s)", backend, handle.base_url, name)
    return handle
