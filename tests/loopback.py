"""Real servers on 127.0.0.1 for provider tests: llm-katan in a subprocess, and a tiny stdlib one.

llm-katan (echo backend, no model download) speaks the OpenAI and Anthropic APIs and injects
faults: `--error-rate`, `--latency-ms`, `--max-inflight`, `--validate-keys`. What it cannot
do (a 429 with `retry-after`, a 400 for `response_format`, a chosen reply sequence, chosen
tool calls: llm-katan only calls the first tool offered, with dummy arguments) is done by
`LoopbackServer`, a `http.server` in a thread that answers a scripted list of replies.

A `Reply` can also be what a broken server or proxy sends: raw bytes of any content type, a
body cut short of its declared length, a body dripped out slowly, a reply held open. A reply
can be computed from the request (`echo_last_user`, `echo_prompt`: an echo server).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

KATAN = Path(sys.executable).with_name("llm-katan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Katan:
    """One running llm-katan. `requests()` counts every API request it received."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> int:
        with urllib.request.urlopen(f"{self.anthropic_url}/stats", timeout=5) as resp:
            return int(json.load(resp)["total"])

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llm-katan exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.anthropic_url}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"llm-katan not ready in {timeout_s}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_katan(workdir: Path, label: str, *flags: str, served: str = "gpt-4o-mini") -> Katan:
    """Start (not wait for) `llm-katan --backend echo` on a free loopback port.

    The command is: llm-katan --model echo --served-model-name SERVED --backend echo
    --host 127.0.0.1 --port PORT --providers openai,anthropic --stats-file FILE
    --log-level warning FLAGS...
    """
    port = free_port()
    log = workdir / f"katan-{label}.log"
    command = [
        str(KATAN),
        "--model",
        "echo",
        "--served-model-name",
        served,
        "--backend",
        "echo",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--providers",
        "openai,anthropic",
        "--stats-file",
        str(workdir / f"katan-{label}-stats.json"),
        "--log-level",
        "warning",
        *flags,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    return Katan(port, process, log)


@dataclass
class Reply:
    """One scripted answer: status, JSON body, headers, and a delay before answering.

    `raw` is sent instead of the JSON body, as `content_type`. `declared_length` is the
    content-length sent (default: the body's); more than the body is a truncated reply (the
    connection closes after the body). `drip_s` sends the body a `drip_bytes` piece at a time
    with that pause between pieces. The delay (and every pause) ends early when the server
    stops, so a reply held open does not outlive its test.
    """

    status: int = 200
    body: Any = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    raw: bytes | None = None
    content_type: str = "application/json"
    declared_length: int | None = None
    drip_s: float = 0.0
    drip_bytes: int = 1

    def payload(self) -> bytes:
        return self.raw if self.raw is not None else json.dumps(self.body).encode()


# A reply, or a function of the request's JSON body that makes one (an echo server).
Answer = Reply | Callable[[dict[str, Any]], Reply]


def chat_reply(text: str, prompt_tokens: int = 7, completion_tokens: int = 3) -> Reply:
    """An OpenAI chat completion, as a server would send it."""
    return Reply(
        body={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "loopback-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def chat_tool_reply(*calls: tuple[str, str, Any], text: str | None = None) -> Reply:
    """An OpenAI chat completion whose message makes tool calls: (id, name, arguments), where
    arguments are a dict (sent as its JSON) or a raw string."""
    reply = chat_reply(text or "")
    message = reply.body["choices"][0]["message"]
    message["content"] = text
    message["tool_calls"] = [
        {
            "id": call_id,
            "type": "function",
            "function": {
                "name": name,
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            },
        }
        for call_id, name, arguments in calls
    ]
    reply.body["choices"][0]["finish_reason"] = "tool_calls"
    return reply


def messages_reply(text: str = "", *tool_uses: tuple[str, str, dict[str, Any]]) -> Reply:
    """An Anthropic Messages API reply: optional text, then `tool_use` blocks (id, name, input)."""
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content += [
        {"type": "tool_use", "id": use_id, "name": name, "input": data}
        for use_id, name, data in tool_uses
    ]
    return Reply(
        body={
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "loopback-model",
            "content": content,
            "stop_reason": "tool_use" if tool_uses else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 11, "output_tokens": 4},
        }
    )


def raw_reply(raw: bytes, content_type: str = "application/json", **options: Any) -> Reply:
    """A 200 (unless `status=` says otherwise) whose body is `raw`, as `content_type`."""
    return Reply(raw=raw, content_type=content_type, **options)


def _prompt_texts(request: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) of each turn of an OpenAI chat request (text parts joined)."""
    turns = []
    for message in request.get("messages", []):
        content = message.get("content") or ""
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content)
        turns.append((message.get("role", ""), content))
    return turns


def echo_last_user(request: dict[str, Any]) -> Reply:
    """An echo server: the chat completion is the last user message, verbatim."""
    users = [text for role, text in _prompt_texts(request) if role == "user"]
    return chat_reply(users[-1] if users else "")


def echo_prompt(request: dict[str, Any]) -> Reply:
    """An echo server: the chat completion is the whole prompt, every turn, in order."""
    return chat_reply("\n\n".join(text for _, text in _prompt_texts(request)))


def error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status=status,
        body={"error": {"message": message, "type": "error", "code": None}},
        headers=headers or {},
    )


class LoopbackServer:
    """An HTTP server on 127.0.0.1 answering POSTs with `replies` in order (the last repeats).

    `received` holds each request's JSON body, in order; `arrived` is set once one came.
    """

    def __init__(self, replies: list[Answer]) -> None:
        self._replies = list(replies)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.received: list[dict[str, Any]] = []
        self.arrived = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.received.append(body)
                    answer = (
                        server._replies.pop(0) if len(server._replies) > 1 else server._replies[0]
                    )
                server.arrived.set()
                reply = answer if isinstance(answer, Reply) else answer(body)
                if server._stopping.wait(reply.delay_s):
                    return
                payload = reply.payload()
                self.send_response(reply.status)
                self.send_header("content-type", reply.content_type)
                declared = reply.declared_length
                self.send_header(
                    "content-length", str(len(payload) if declared is None else declared)
                )
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                with suppress(OSError):  # the client gave up (its timeout or its cap): fine
                    self._write(reply, payload)
                if declared is not None and declared != len(payload):
                    self.close_connection = True

            def _write(self, reply: Reply, payload: bytes) -> None:
                if not reply.drip_s:
                    self.wfile.write(payload)
                    return
                for start in range(0, len(payload), reply.drip_bytes):
                    self.wfile.write(payload[start : start + reply.drip_bytes])
                    self.wfile.flush()
                    if server._stopping.wait(reply.drip_s):
                        return

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def loopback(*replies: Answer) -> Iterator[LoopbackServer]:
    with LoopbackServer(list(replies)) as server:
        yield server


class FakeClock:
    """An injectable clock: `sleep` records the wait and moves time on without sleeping."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
