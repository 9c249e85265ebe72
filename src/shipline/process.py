"""Run a process with a timeout, and never leave any of it behind: the one way shipline starts
a command (the judge's CI command, a setup step, an agent's tool or CLI, git, gh).

Every command runs in its own process group. At the timeout the whole group gets SIGTERM and,
after a grace period, SIGKILL, so background grandchildren (`sleep 1000 &`) die with it.

- `run_command`: a shell command, stdout and stderr merged. Left-over members of the group are
  also killed when the command itself exits. Memory stays bounded for huge logs (the head and
  the tail are kept, the omission is marked in the log) while `log_path`, when given, receives
  the full log.
- `run_argv`: an argv whose stdout and stderr are kept apart (git, gh), with optional input.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from shipline.errors import ShiplineError

DEFAULT_MAX_LOG_CHARS = 1_000_000
KILL_GRACE_S = 2.0
_READ_CHUNK = 65536


class CommandError(ShiplineError):
    """A command cannot be started (empty command, missing working directory)."""


@dataclass(frozen=True)
class CommandResult:
    """What a finished (or killed) command left behind."""

    command: str
    exit_code: int  # negative: killed by that signal (POSIX convention of subprocess)
    duration_s: float
    log: str  # stdout+stderr merged; head and tail with a marked gap when over the bound
    timed_out: bool
    omitted_bytes: int = 0  # bytes of log left out of `log` (the full log is in log_path)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class _BoundedLog:
    """Keeps the first `head` and the last `tail` bytes of a stream, and counts the rest."""

    def __init__(self, max_bytes: int, sink: BinaryIO | None) -> None:
        self.head_limit = max_bytes // 2
        self.tail_limit = max_bytes - self.head_limit
        self.head = bytearray()
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_size = 0
        self.omitted = 0
        self.sink = sink

    def feed(self, chunk: bytes) -> None:
        if self.sink is not None:
            self.sink.write(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self.tail.append(chunk)
        self.tail_size += len(chunk)
        while self.tail_size > self.tail_limit:
            first = self.tail[0]
            excess = self.tail_size - self.tail_limit
            if len(first) <= excess:
                self.tail.popleft()
                self.tail_size -= len(first)
                self.omitted += len(first)
            else:
                self.tail[0] = first[excess:]
                self.tail_size -= excess
                self.omitted += excess

    def text(self) -> str:
        head = self.head.decode("utf-8", errors="replace")
        tail = b"".join(self.tail).decode("utf-8", errors="replace")
        if not self.omitted:
            return head + tail
        gap = f"\n[shipline: {self.omitted} bytes of log omitted here]\n"
        return head + gap + tail


def _pump(stream: BinaryIO, log: _BoundedLog) -> None:
    fd = stream.fileno()
    while True:
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except OSError:
            return
        if not chunk:
            return
        log.feed(chunk)


def _group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is in the group. Uses /proc where there is one,
    because zombies whose parent never reaps them (PID 1 in many containers) still count for
    `killpg(pgid, 0)`."""
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(proc: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM the command's process group, wait up to `grace_s` for it to go, then SIGKILL it."""
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, so a zombie does not count as alive
        if not _group_alive(pgid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def run_command(
    command: str,
    cwd: Path,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    *,
    max_log_chars: int = DEFAULT_MAX_LOG_CHARS,
    log_path: Path | None = None,
    kill_grace_s: float = KILL_GRACE_S,
) -> CommandResult:
    """Run `command` through the shell in `cwd`; kill its process group at `timeout_s`."""
    if not command.strip():
        raise CommandError("the command is empty: set a command such as `pytest -q`")
    if not Path(cwd).is_dir():
        raise CommandError(f"cannot run `{command}`: working directory {cwd} does not exist")
    sink = open(log_path, "wb") if log_path is not None else None  # noqa: SIM115
    log = _BoundedLog(max(max_log_chars, 2), sink)
    started = time.monotonic()
    timed_out = False
    try:
        proc = subprocess.Popen(
            command,
            shell=True,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert proc.stdout is not None
        reader = threading.Thread(target=_pump, args=(proc.stdout, log), daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        # Whether it timed out or finished, nothing of its process group may outlive it.
        _kill_group(proc, kill_grace_s if timed_out else min(kill_grace_s, 0.5))
        exit_code = proc.wait()
        reader.join(timeout=5.0)
        proc.stdout.close()
        duration = time.monotonic() - started
        if timed_out:
            note = (
                f"\n[shipline: killed after the {timeout_s:g} s timeout "
                f"(process group {proc.pid}, exit {exit_code})]\n"
            )
            log.feed(note.encode())
    finally:
        if sink is not None:
            sink.close()
    return CommandResult(
        command=command,
        exit_code=exit_code,
        duration_s=duration,
        log=log.text(),
        timed_out=timed_out,
        omitted_bytes=log.omitted,
    )


@dataclass(frozen=True)
class Finished:
    """What a finished (or killed) argv left behind, its output streams kept apart."""

    argv: tuple[str, ...]
    returncode: int  # negative: killed by that signal
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool


def run_argv(
    argv: Sequence[str],
    cwd: Path,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    *,
    input: str | None = None,
    kill_grace_s: float = KILL_GRACE_S,
    errors: str | None = None,
) -> Finished:
    """Run `argv` (no shell) in `cwd`; kill its process group at `timeout_s`.

    stdin is `input`, else nothing (a command never waits on shipline's terminal). A missing
    executable raises FileNotFoundError, for the caller to name what to install. `errors`
    (e.g. "surrogateescape") reads the output as UTF-8 with that error handler and leaves
    line endings as they are, so output that is not text (a blob's bytes) can be turned back
    into its exact bytes (`.encode("utf-8", "surrogateescape")`).
    """
    started = time.monotonic()
    raw = errors is not None  # decoded below, without text mode's newline translation
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=not raw,
        start_new_session=True,
    )
    timed_out = False
    sent: Any = input.encode("utf-8") if raw and input is not None else input
    try:
        stdout, stderr = proc.communicate(sent, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc, kill_grace_s)
        try:  # what it printed before it was killed
            stdout, stderr = proc.communicate(timeout=kill_grace_s)
        except subprocess.TimeoutExpired:  # a process that left the group holds the pipes
            stdout = stderr = ""
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            proc.wait()
    except BaseException:  # interrupted (Ctrl-C, a signal): the command does not outlive it
        _kill_group(proc, 0.0)
        proc.wait()
        raise
    if errors is not None:
        stdout = (stdout or b"").decode("utf-8", errors)
        stderr = (stderr or b"").decode("utf-8", errors)
    return Finished(
        argv=tuple(argv),
        returncode=proc.returncode,
        stdout=stdout or "",
        stderr=stderr or "",
        duration_s=time.monotonic() - started,
        timed_out=timed_out,
    )
