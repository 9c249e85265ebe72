"""Store faults, for real: a missing, empty, garbage, truncated or read-only store, a write
lock held by another process, a full disk, a store deleted under a running worker, a dropped
PostgreSQL database. Each is one clear line and exit 2 (never a traceback, never a new empty
store in place of the old one); a worker waits out the transient ones and stops on the rest.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import PG_ADMIN, Project, make_project, replay_rules, run_cli
from shipline.engine.worker import BACKOFF_MAX_S, backoff_s
from shipline.store.db import (
    SQLITE_BUSY,
    SQLITE_CANTOPEN,
    SQLITE_CORRUPT,
    SQLITE_FULL,
    SQLITE_IOERR,
    SQLITE_IOERR_SHMSIZE,
    SQLITE_LOCKED,
    SQLITE_NOTADB,
    SQLITE_READONLY,
    SQLITE_READONLY_DBMOVED,
    postgres_fault,
    sqlite_fault,
)

URL, PATH = "sqlite:////p/.shipline/shipline.db", "/p/.shipline/shipline.db"

# --- the decisions (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "transient", "says"),
    [
        (SQLITE_BUSY, "database is locked", True, "locked by another process"),
        (SQLITE_LOCKED, "database table is locked", True, "locked by another process"),
        (SQLITE_FULL, "database or disk is full", True, "disk that holds it is full"),
        (SQLITE_IOERR_SHMSIZE, "disk I/O error", True, "disk that holds it is full"),
        (SQLITE_READONLY, "attempt to write a readonly database", False, "read-only"),
        (SQLITE_READONLY_DBMOVED, "attempt to write a readonly database", False, "deleted"),
        (SQLITE_CORRUPT, "database disk image is malformed", False, "damaged"),
        (SQLITE_NOTADB, "file is not a database", False, "damaged"),
        (SQLITE_CANTOPEN, "unable to open database file", False, "its folder exists"),
        (SQLITE_IOERR, "disk I/O error", False, "the disk failed"),
    ],
)
def test_each_sqlite_fault_names_itself_its_fix_and_whether_waiting_helps(
    code: int, message: str, transient: bool, says: str
) -> None:
    fault = sqlite_fault(code, message, URL, PATH, 30)
    assert fault is not None
    assert fault.transient is transient
    assert says in str(fault) and URL in str(fault)
    assert message in str(fault) or code == SQLITE_READONLY_DBMOVED
    assert "\n" not in str(fault)


@pytest.mark.parametrize("code", [1, 19, 20])  # SQLITE_ERROR, CONSTRAINT, MISMATCH: not faults
def test_the_callers_own_sqlite_errors_are_not_store_faults(code: int) -> None:
    assert sqlite_fault(code, "no such table: x", URL, PATH, 30) is None


@pytest.mark.parametrize(
    ("sqlstate", "message", "transient", "says"),
    [
        ("3D000", 'database "x" does not exist', False, "does not exist"),
        (None, 'connection failed: FATAL:  database "x" does not exist', False, "dropped"),
        (None, "connection failed: Connection refused", True, "Connection refused"),
        ("57P01", "terminating connection due to administrator command", True, "terminating"),
        ("08006", "connection failure", True, "connection failure"),
        ("53100", "could not extend file: No space left on device", True, "No space left"),
        ("25006", "cannot execute INSERT in a read-only transaction", False, "read-only"),
        ("XX001", "invalid page in block 7", False, "damaged"),
        ("28P01", "password authentication failed", False, "login was refused"),
    ],
)
def test_each_postgres_fault_names_itself_and_whether_waiting_helps(
    sqlstate: str | None, message: str, transient: bool, says: str
) -> None:
    fault = postgres_fault(sqlstate, message, "postgresql+psycopg://u@h/x")
    assert fault is not None and fault.transient is transient
    assert says in str(fault) and "postgresql+psycopg://u@h/x" in str(fault)


@pytest.mark.parametrize("sqlstate", ["23505", "42601", "40001", "55P03", "57014"])
def test_the_callers_own_postgres_errors_are_not_store_faults(sqlstate: str) -> None:
    # a duplicate key, a syntax error, a serialization failure, lock_timeout, a cancel
    assert postgres_fault(sqlstate, "whatever", "postgresql://h/x") is None


def test_a_worker_backs_off_doubling_up_to_a_ceiling() -> None:
    assert [backoff_s(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff_s(100) == BACKOFF_MAX_S


# --- a missing or empty store: only `init` makes one -------------------------------------------


def store_file(project: Project) -> Path:
    return project.root / ".shipline" / "shipline.db"


def test_a_missing_store_is_refused_not_made_anew(sqlite_project: Project) -> None:
    sqlite_project.add("feature", "kept?")
    db = store_file(sqlite_project)
    db.unlink()

    for command in (("ticket", "list"), ("cost",), ("run",)):
        out = sqlite_project.cli(*command, expect=2)
        assert "no store at sqlite:///" in out.stderr and "run `shipline init`" in out.stderr
    assert not db.exists()  # nothing quietly created an empty store in its place

    sqlite_project.cli("init")
    assert sqlite_project.tickets() == []  # init, and only init, makes a new one


def test_a_zero_byte_store_is_refused_and_init_makes_it_a_store(sqlite_project: Project) -> None:
    db = store_file(sqlite_project)
    db.write_bytes(b"")

    out = sqlite_project.cli("ticket", "add", "--kind", "feature", "--title", "x", expect=2)
    assert "is an empty file" in out.stderr and "run `shipline init`" in out.stderr
    assert db.stat().st_size == 0

    sqlite_project.cli("init")
    assert sqlite_project.add("feature", "x") == 1


def test_an_empty_postgres_database_is_not_a_store_until_init(tmp_path: Path, pg_url: str) -> None:
    make_project(tmp_path / "repo", None)
    out = run_cli(tmp_path / "repo", "--db", pg_url, "ticket", "list", expect=2)
    assert "is not a shipline store" in out.stderr and "run `shipline init`" in out.stderr
    run_cli(tmp_path / "repo", "--db", pg_url, "init")
    assert run_cli(tmp_path / "repo", "--db", pg_url, "ticket", "list", "--json").stdout == "[]\n"


# --- a damaged store ----------------------------------------------------------------------------


def test_a_truncated_store_is_a_clear_error_and_doctor_finds_it(sqlite_project: Project) -> None:
    for n in range(3):
        sqlite_project.add("hotfix", f"ticket {n}", "x" * 20_000)  # pages all over the file
    db = store_file(sqlite_project)
    with db.open("r+b") as handle:
        handle.truncate(db.stat().st_size // 2)

    out = sqlite_project.cli("ticket", "list", expect=2)
    assert "is damaged (database disk image is malformed)" in out.stderr
    assert "restore it from a backup" in out.stderr

    doctor = sqlite_project.cli("doctor", "--json", expect=1)
    assert '"ok": false' in doctor.stdout and "damaged" in doctor.stdout


def test_garbage_bytes_as_the_store_are_refused_by_every_command(sqlite_project: Project) -> None:
    db = store_file(sqlite_project)
    db.write_bytes(os.urandom(8192))
    for command in (("ticket", "add", "--kind", "feature", "--title", "x"), ("run",), ("init",)):
        out = sqlite_project.cli(*command, expect=2)
        assert "is damaged (file is not a database)" in out.stderr


# --- a read-only store --------------------------------------------------------------------------


def as_user_without_override() -> list[str]:
    """As root, permission bits mean nothing: drop CAP_DAC_OVERRIDE so that they do."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only file cannot be simulated")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def cli_as(prefix: list[str], project: Project, *args: str, expect: int) -> Any:
    command = [*prefix, sys.executable, "-m", "shipline", *args]
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    result = subprocess.run(
        command, cwd=project.root, capture_output=True, text=True, timeout=120, env=env
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == expect, result.stderr
    return result


def test_a_read_only_store_still_reads_and_refuses_writes_clearly(sqlite_project: Project) -> None:
    sqlite_project.add("feature", "readable")
    prefix = as_user_without_override()
    db = store_file(sqlite_project)
    db.chmod(0o444)
    try:
        listed = cli_as(prefix, sqlite_project, "ticket", "list", "--json", expect=0)
        assert '"readable"' in listed.stdout
        out = cli_as(
            prefix, sqlite_project, "ticket", "add", "--kind", "hotfix", "--title", "x", expect=2
        )
        assert "it is read-only (attempt to write a readonly database)" in out.stderr
        assert "chmod u+w" in out.stderr
    finally:
        db.chmod(0o644)
    assert [t["title"] for t in sqlite_project.tickets()] == ["readable"]


# --- a write lock held by another process --------------------------------------------------------

LOCK_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


@contextlib.contextmanager
def write_lock(db: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(db), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


FAST = "\n[store]\nbusy_timeout_s = 0.3\n[worker]\npoll_s = 0.1\nlease_s = 2.0\n"


def test_a_held_write_lock_lets_reads_through_and_names_itself_to_writers(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "repo", None, FAST)
    project.add("feature", "first")
    with write_lock(store_file(project), 60):
        assert [t["title"] for t in project.tickets()] == ["first"]  # reads do not wait
        out = project.cli("ticket", "add", "--kind", "hotfix", "--title", "x", expect=2)
    assert "is locked by another process (database is locked; waited 0.3 s)" in out.stderr
    assert "busy_timeout_s" in out.stderr
    assert [t["title"] for t in project.tickets()] == ["first"]


def test_a_worker_waits_out_a_held_lock_and_then_finishes(tmp_path: Path) -> None:
    project = make_project(tmp_path / "repo", None, FAST)
    project.add("hotfix", "greet crashes on an empty name")
    with write_lock(store_file(project), 2.5):
        out = project.cli("run", "--quiet")
    assert "locked by another process" in out.stderr and "trying again in 1 s" in out.stderr
    assert project.tickets()[0]["status"] == "done"


# --- a full disk ---------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (root only; skipped with the reason where it cannot be mounted)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a full disk needs a tiny tmpfs, and mounting one needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as handle:
        while True:  # until ENOSPC
            handle.write(b"\0" * 4096)
    return filler


@pytest.mark.slow
def test_a_full_disk_is_waited_out_by_a_worker_and_named_to_a_command(
    tmp_path: Path, tiny_disk: Path
) -> None:
    rules = [{**rule, "delay_s": 0.3} for rule in replay_rules()]
    project = make_project(tmp_path / "repo", f"sqlite:///{tiny_disk}/shipline.db", FAST, rules)
    project.add("hotfix", "greet crashes on an empty name")
    worker = subprocess.Popen(
        [sys.executable, "-m", "shipline", "--db", str(project.db_url), "run"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert worker.stdout is not None and worker.stderr is not None
    assert "asking the producer" in worker.stdout.readline()  # at work: the store is open
    filler = fill(tiny_disk)
    try:
        notice = worker.stderr.readline()  # the worker says it waits, and does not die
        assert "the disk that holds it is full" in notice and "trying again in" in notice
        out = project.cli("ticket", "add", "--kind", "hotfix", "--title", "x", expect=2)
        assert "the disk that holds it is full" in out.stderr
    finally:
        filler.unlink()
    stdout, stderr = worker.communicate(timeout=120)
    assert worker.returncode == 0, stderr
    assert "Traceback" not in stderr and "ran 4 step(s)" in stdout
    assert project.tickets()[0]["status"] == "done"


# --- a store deleted under a running worker ------------------------------------------------------


def test_a_store_deleted_under_a_worker_stops_it_loudly(tmp_path: Path) -> None:
    rules = [{**rule, "delay_s": 1.0} for rule in replay_rules()]
    project = make_project(tmp_path / "repo", None, FAST, rules)
    project.add("hotfix", "greet crashes on an empty name")
    db = store_file(project)
    worker = subprocess.Popen(
        [sys.executable, "-m", "shipline", "work"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert worker.stdout is not None
    assert "polling" in worker.stdout.readline()
    assert "asking the producer" in worker.stdout.readline()  # a step is in flight
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)

    stdout, stderr = worker.communicate(timeout=60)

    assert worker.returncode == 2, stdout + stderr
    assert "Traceback" not in stderr
    assert f"the store at sqlite:///{db} was deleted or moved" in stderr
    assert "passed" not in stdout and "stopped after" not in stdout  # nothing done in a void
    assert not db.exists()
    assert "no store at" in project.cli("ticket", "list", expect=2).stderr


@pytest.mark.postgres
def test_a_dropped_postgres_database_stops_a_worker_and_is_a_clear_error(tmp_path: Path) -> None:
    name = f"shipline_drop_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        project = make_project(tmp_path / "repo", url)
        worker = subprocess.Popen(
            [sys.executable, "-m", "shipline", "--db", url, "work", "--poll", "0.2"],
            cwd=project.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
        assert worker.stdout is not None and "polling" in worker.stdout.readline()
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 2 and "Traceback" not in stderr
    assert f'database "{name}" does not exist' in stderr and "was it dropped?" in stderr
    for command, code in ((("ticket", "list"), 2), (("doctor",), 1)):
        out = project.cli(*command, expect=code)
        assert f'database "{name}" does not exist' in out.stderr + out.stdout


def test_sqlite_errors_that_are_not_faults_keep_their_own_type(sqlite_project: Project) -> None:
    """A constraint is the caller's bug, not a store fault: it stays an IntegrityError."""
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from shipline.engine.project import open_project

    opened = open_project(sqlite_project.root)
    try:
        with pytest.raises(IntegrityError), opened.store.transaction() as conn:
            conn.execute(text("INSERT INTO store_identity SELECT * FROM store_identity"))
    finally:
        opened.close()
    assert sqlite3.connect(store_file(sqlite_project)).execute(
        "SELECT count(*) FROM store_identity"
    ).fetchone() == (1,)
