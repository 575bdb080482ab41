"""Real OpenAI-compatible servers on loopback for the endpoint engine's tests.

`LlamaServer`: llama-cpp-python's server on the bundled GGUF (the real thing a user would
point Perplex at). `MisbehavingServer`: a small real HTTP server that answers chat
completions the way broken endpoints do (no logprobs, a stream that stalls), for the
error paths no healthy server shows.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STARTUP_SECONDS = 120.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """`python -m llama_cpp.server` serving one GGUF file on 127.0.0.1."""

    def __init__(self, gguf: Path, log: Path, api_key: str | None = None,
                 logits_all: bool = True) -> None:
        """Start the server; `wait` blocks until it answers.

        `logits_all=False` serves no log-probabilities (a server that exposes less).
        """
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.model = "smollm2"
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
                   "--model_alias", self.model, "--host", "127.0.0.1",
                   "--port", str(self.port), "--n_ctx", "2048", "--n_threads", "2",
                   "--logits_all", "true" if logits_all else "false",
                   # queue concurrent requests, as vLLM serves them, rather than cutting
                   # a streaming answer short when the next request arrives
                   "--interrupt_requests", "false"]
        if api_key:
            command += ["--api_key", api_key]
        self._log = log.open("w")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        self.log_path = log

    def wait(self) -> None:
        """Block until /v1/models answers (or fail with the server's log)."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited:\n{self.log_path.read_text()}")
            try:
                urllib.request.urlopen(f"{self.base_url}/models", timeout=2)
                return
            except OSError as exc:
                if getattr(exc, "code", None) == 401:  # up, and asking for its key
                    return
                time.sleep(0.5)
        raise RuntimeError(f"llama.cpp server not up after {STARTUP_SECONDS:.0f} s:\n"
                           f"{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        """Stop the server."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


@contextmanager
def served(log: Path, **options) -> Iterator[LlamaServer]:
    """The bundled GGUF behind llama.cpp's server (`LlamaServer` options) while the block runs."""
    from perplex.engine.local.models import bundled_gguf_path

    running = LlamaServer(bundled_gguf_path(), log, **options)
    try:
        running.wait()
        yield running
    finally:
        running.stop()


def _chunk(content: str | None, finish: str | None = None, logprobs=None) -> bytes:
    body = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": {"content": content} if content else {},
                         "finish_reason": finish, "logprobs": logprobs}]}
    return f"data: {json.dumps(body)}\n\n".encode()


class MisbehavingServer:
    """A real HTTP server whose chat completions stream ignores logprobs, or stalls."""

    def __init__(self, mode: str) -> None:
        """`mode` "no-logprobs", "stall" (one token, then silence) or "unknown-model"."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.mode == "unknown-model":  # as vLLM answers a model it does not serve
                    body = json.dumps({"object": "error", "type": "NotFoundError", "code": 404,
                                       "message": "The model `m` does not exist."}).encode()
                    self.send_response(404)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                entry = {"token": "Hi", "logprob": -0.1, "bytes": None, "top_logprobs": [
                    {"token": "Hi", "logprob": -0.1, "bytes": None}]}
                if outer.mode == "no-logprobs":
                    self.wfile.write(_chunk("Hello"))
                    self.wfile.write(_chunk(" there", "stop"))
                    self.wfile.write(b"data: [DONE]\n\n")
                else:
                    self.wfile.write(_chunk("Hi", logprobs={"content": [entry]}))
                    self.wfile.flush()
                    outer.release.wait(30)  # stall until the test is done

            def log_message(self, *args):
                pass

        self.mode, self.release = mode, threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Let a stalled answer go and shut the server down."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class RateLimitingProxy:
    """A real HTTP proxy in front of an OpenAI-compatible server that answers 429 at first.

    The first `refuse` requests get "429 Too Many Requests" (as a rate-limited provider
    answers); every later one is passed to `upstream` and its answer (a stream included)
    passed back as it comes.
    """

    def __init__(self, upstream: str, refuse: int) -> None:
        """`upstream`: the server's base URL (…/v1)."""
        outer = self
        self.refused = 0
        self.passed = 0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer._lock:
                    refuse = outer.refused < refuse_first
                    outer.refused += refuse
                    outer.passed += not refuse
                if refuse:
                    error = json.dumps({"error": {"message": "Rate limit reached",
                                                  "type": "rate_limit"}}).encode()
                    self.send_response(429)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                request = urllib.request.Request(
                    upstream.removesuffix("/v1") + self.path, data=body, method="POST",
                    headers={k: v for k, v in self.headers.items()
                             if k.lower() in ("content-type", "authorization")})
                with urllib.request.urlopen(request, timeout=120) as answer:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.headers.get("Content-Type", ""))
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    while piece := answer.read1(65536):
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *args):
                pass

        refuse_first = refuse
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Shut the proxy down."""
        self.server.shutdown()
        self.server.server_close()
