"""The git layer: every git command has a time limit, commits as the right identity, and fails
with git's own words, redacted. Real repositories, real hooks that hang."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import git
from shipline.workspaces.git import Git, GitTimeout, WorkspaceError


def _alive(pid: int) -> bool:
    """True while `pid` runs; a zombie waiting for its reaper counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def hang_script(folder: Path, name: str = "hang") -> tuple[Path, Path]:
    """A script that notes its pid (and its parent's) in a file, then sleeps for ten minutes:
    a hook or a remote that never answers. Returns (script, pid file)."""
    pids = folder / f"{name}.pids"
    script = folder / f"{name}.sh"
    script.write_text(f"#!/bin/sh\necho $PPID $$ >> '{pids}'\nexec sleep 600\n")
    script.chmod(0o755)
    return script, pids


def assert_all_dead(pids: Path) -> None:
    noted = [int(pid) for pid in pids.read_text().split()]
    assert noted, "the script never ran"
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(_alive(pid) for pid in noted):
        time.sleep(0.05)
    assert [pid for pid in noted if _alive(pid)] == []


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository with one commit; git's global and system config are out of the way."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("sample\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "init")
    return path


def author(repo: Path) -> str:
    return git(repo, "log", "-1", "--format=%an <%ae> / %cn <%ce>").strip()


def test_a_hung_hook_times_out_naming_the_command_and_the_limit(repo: Path) -> None:
    script, pids = hang_script(repo.parent)
    (repo / ".git" / "hooks" / "pre-commit").symlink_to(script)
    started = time.monotonic()
    with pytest.raises(GitTimeout) as caught:
        Git(repo, timeout_s=1).run("commit", "-q", "--allow-empty", "-m", "hangs")
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert message.startswith("`git commit -q --allow-empty -m hangs` did not finish in 1 s in ")
    assert "[workspaces] git_timeout_s" in message
    assert isinstance(caught.value, WorkspaceError)  # the engine hands the ticket off
    assert_all_dead(pids)  # the hook went with git


def test_a_command_that_talks_to_a_remote_gets_the_network_limit(
    repo: Path, tmp_path: Path
) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    script, pids = hang_script(tmp_path, "upload-pack")
    started = time.monotonic()
    with pytest.raises(GitTimeout) as caught:
        Git(repo, timeout_s=60, network_timeout_s=1).run(
            "fetch", "--upload-pack", str(script), str(remote)
        )
    assert time.monotonic() - started < 10
    assert "did not finish in 1 s" in str(caught.value)
    assert "the remote did not answer" in str(caught.value)
    assert "[workspaces] git_network_timeout_s" in str(caught.value)
    assert_all_dead(pids)


def test_commits_are_made_as_git_s_configured_user_else_as_shipline(repo: Path) -> None:
    (repo / "a.txt").write_text("a\n")
    Git(repo).commit_work("as shipline")
    assert author(repo) == "shipline <shipline@localhost> / shipline <shipline@localhost>"
    other = repo.parent / "configured"
    git(repo.parent, "clone", "-q", str(repo), str(other))
    git(other, "config", "user.name", "Ada")
    git(other, "config", "user.email", "ada@example.invalid")
    (other / "b.txt").write_text("b\n")
    Git(other).commit_work("as the configured user")
    assert author(other) == "Ada <ada@example.invalid> / Ada <ada@example.invalid>"


def test_an_explicit_identity_commits_as_that_identity(repo: Path) -> None:
    (repo / "a.txt").write_text("a\n")
    Git(repo, ("Bot", "bot@example.invalid")).commit_work("as the bot")
    assert author(repo) == "Bot <bot@example.invalid> / Bot <bot@example.invalid>"


def test_a_failure_names_the_command_with_git_s_words_and_secrets_redacted(repo: Path) -> None:
    token = "ghp_" + "a1B2" * 9
    with pytest.raises(WorkspaceError) as caught:
        Git(repo).run("fetch", f"/nowhere/{token}")
    message = str(caught.value)
    assert message.startswith("`git fetch /nowhere/ghp_***` failed in ")
    assert "does not appear to be a git repository" in message
    assert token not in message
    assert not isinstance(caught.value, GitTimeout)


def test_a_probe_is_a_bool_and_a_missing_directory_a_clear_error(repo: Path) -> None:
    git_ = Git(repo)
    assert git_.ok("rev-parse", "--verify", "-q", "HEAD")
    assert not git_.ok("rev-parse", "--verify", "-q", "refs/heads/nope")
    with pytest.raises(WorkspaceError, match="does not exist"):
        Git(repo / "gone").run("status")
