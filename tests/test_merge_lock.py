"""The merge lock: real processes contend for it, on PostgreSQL and on the SQLite file lock.

Each holder is a separate Python process. It starts at once (imports take most of a second),
asks for the lock once the test creates its `<name>.take` file, notes the time of each step in
a shared log, and keeps the lock until the test creates its `<name>.release` file (or kills it).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import git
from shipline.store.db import Store
from shipline.workspaces.merge import (
    MergeLockTimeout,
    merge_lock,
    merge_lock_key,
    repository_identity,
)

HOLDER = """
import sys, time
from pathlib import Path
from shipline.workspaces.merge import merge_lock
from shipline.store.db import Store

url, repo, target, name, log = sys.argv[1:]

def note(step):
    with open(log, "a") as f:
        f.write(f"{time.time():.6f} {name} {step}\\n")

def wait_for(gate):
    while not (Path(log).parent / f"{name}.{gate}").exists():
        time.sleep(0.01)

store = Store(url, Path(repo))
wait_for("take")
note("waiting")
with merge_lock(store, Path(repo), target, who=name):
    note("acquired")
    wait_for("release")
    note("releasing")
"""


def make_repo(path: Path, readme: str = "sample\n") -> Path:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text(readme)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "init")
    return path


class Holders:
    """Processes that hold the merge lock, and the log of what each did when."""

    def __init__(self, tmp: Path, url: str) -> None:
        self.tmp = tmp
        self.url = url
        self.log = tmp / "steps.log"
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, name: str, repo: Path, target: str = "main") -> subprocess.Popen[str]:
        args = [sys.executable, "-c", HOLDER, self.url, str(repo), target, name, str(self.log)]
        proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def take(self, name: str) -> None:
        (self.tmp / f"{name}.take").touch()

    def release(self, name: str) -> None:
        (self.tmp / f"{name}.release").touch()

    def steps(self) -> dict[str, float]:
        """`"<name> <step>"` → when; each holder does each step once."""
        text = self.log.read_text() if self.log.exists() else ""
        return {rest: float(at) for at, rest in (line.split(" ", 1) for line in text.splitlines())}

    def wait_for(self, step: str, timeout: float = 15.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if step in self.steps():
                return self.steps()[step]
            for proc in self.procs:
                assert proc.poll() in (None, 0, -signal.SIGKILL), proc.communicate()[1]
            time.sleep(0.01)
        raise AssertionError(f"no {step!r} within {timeout} s: {self.steps()}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(params=["sqlite", "postgresql"])
def holders(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Holders]:
    url = (
        str(request.getfixturevalue("pg_url"))
        if request.param == "postgresql"
        else f"sqlite:///{tmp_path / 'shipline.db'}"
    )
    running = Holders(tmp_path, url)
    yield running
    running.stop()


def second_repo(holders: Holders, repo: Path) -> Path:
    """Where the second contender works: a clone (another machine) when the store is shared
    PostgreSQL; the same repository on SQLite, which is one machine's store."""
    if not holders.url.startswith("postgresql"):
        return repo
    clone = holders.tmp / "clone"
    git(holders.tmp, "clone", "-q", str(repo), str(clone))
    return clone


def test_a_second_merge_waits_until_the_first_releases(tmp_path: Path, holders: Holders) -> None:
    repo = make_repo(tmp_path / "repo")
    holders.start("A", repo)
    b = holders.start("B", second_repo(holders, repo))
    holders.take("A")
    holders.wait_for("A acquired")
    holders.release("B")  # B may go as soon as it holds the lock
    holders.take("B")
    holders.wait_for("B waiting")
    time.sleep(0.3)  # time enough to take a lock that did not exclude it
    assert "B acquired" not in holders.steps()
    holders.release("A")
    assert b.wait(timeout=15) == 0
    steps = holders.steps()
    assert steps["A acquired"] < steps["B waiting"] < steps["A releasing"] < steps["B acquired"]


def test_a_killed_holder_releases_the_lock(tmp_path: Path, holders: Holders) -> None:
    repo = make_repo(tmp_path / "repo")
    a = holders.start("A", repo)
    b = holders.start("B", second_repo(holders, repo))
    holders.take("A")
    holders.wait_for("A acquired")
    holders.release("B")
    holders.take("B")
    holders.wait_for("B waiting")
    time.sleep(0.3)
    assert "B acquired" not in holders.steps()
    killed_at = time.time()
    a.send_signal(signal.SIGKILL)
    assert b.wait(timeout=15) == 0
    steps = holders.steps()
    assert "A releasing" not in steps
    assert killed_at <= steps["B acquired"] < killed_at + 5


def test_different_targets_do_not_block_each_other(tmp_path: Path, holders: Holders) -> None:
    repo = make_repo(tmp_path / "repo")
    holders.start("A", repo, "main")
    b = holders.start("B", second_repo(holders, repo), "release/1.0")
    holders.take("A")
    holders.wait_for("A acquired")
    holders.release("B")
    holders.take("B")
    assert b.wait(timeout=15) == 0
    steps = holders.steps()
    assert "A releasing" not in steps  # B merged into its target while A held main
    assert steps["B acquired"] > steps["A acquired"]


def test_a_timeout_names_who_waits_for_what_and_who_holds_it(
    tmp_path: Path, holders: Holders
) -> None:
    repo = make_repo(tmp_path / "repo")
    holders.start("A", repo)
    holders.take("A")
    holders.wait_for("A acquired")
    store = Store(holders.url, tmp_path)
    started = time.monotonic()
    with (
        pytest.raises(MergeLockTimeout) as caught,
        merge_lock(store, second_repo(holders, repo), "main", timeout_s=0.3, who="ticket #7"),
    ):
        pytest.fail("took a lock that another process holds")
    waited = time.monotonic() - started
    message = str(caught.value)
    assert message.startswith("ticket #7 (pid ")
    assert "waited 0.3 s for the merge lock of main" in message
    assert "held by A (pid " in message
    assert 0.3 <= waited < 5
    holders.release("A")
    with merge_lock(store, repo, "main", timeout_s=10):  # free again once A is done
        pass
    store.close()


def test_clones_of_one_repository_share_the_key_of_a_target(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    clone = tmp_path / "elsewhere" / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    (repo / "more.txt").write_text("the target moved on\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "more")
    root = git(repo, "rev-list", "--max-parents=0", "HEAD").strip()
    assert repository_identity(repo, "main") == repository_identity(clone, "main") == root
    other = make_repo(tmp_path / "other", "another project\n")
    assert repository_identity(other, "main") != root  # another repository: another key
    keys = {merge_lock_key(root, target) for target in ("main", "release/1.0", "main ")}
    assert len(keys) == 3
    assert all(-(2**63) <= key < 2**63 for key in keys)
