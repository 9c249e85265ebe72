"""Per-ticket worktrees on real git repositories: creation, reuse, crash repair, concurrency,
setup, removal, pruning; and safe file blocks with locked tests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from shipline.workspaces import (
    SetupError,
    UnsafePathError,
    WorkspaceError,
    WorkspaceInfo,
    apply_file_blocks,
    branch_name,
    changed_locked_files,
    ensure_worktree,
    hash_files,
    list_workspaces,
    lock_files,
    prune,
    prune_plan,
    read_setup,
    remove_worktree,
)
from shipline.workspaces.worktree import LAST_USED, SETUP_LOG, SETUP_RECORD


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(autouse=True)
def isolated_git(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A git identity of its own; nothing from the machine's global or system config."""
    config = tmp_path_factory.mktemp("gitconfig") / "config"
    config.write_text("[user]\n\tname = Test\n\temail = test@example.com\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "app.py").write_text("def answer():\n    return 42\n")
    (path / "tests").mkdir()
    (path / "tests" / "test_app.py").write_text("from app import answer\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "initial")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "worktrees"


def porcelain(repo: Path) -> str:
    return git(repo, "worktree", "list", "--porcelain")


# --- names ------------------------------------------------------------------------------------


def test_branch_name_is_prefixed_ticket_id_and_slug() -> None:
    assert branch_name(12, "Fix: the Login page (v2)!") == "shipline/12-fix-the-login-page-v2"
    assert branch_name("T-7", "Café crème") == "shipline/T-7-cafe-creme"
    assert branch_name(3, "!!!") == "shipline/3"
    assert len(branch_name(1, "word " * 50)) <= len("shipline/1-") + 40


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "x y", "-rf", "a" * 65])
def test_ticket_id_that_cannot_name_a_worktree_is_refused(repo: Path, root: Path, bad: str) -> None:
    with pytest.raises(WorkspaceError, match="cannot name a worktree"):
        ensure_worktree(repo, root, bad, "title")


# --- create and reuse -------------------------------------------------------------------------


def test_new_ticket_gets_its_own_worktree_on_its_own_branch(repo: Path, root: Path) -> None:
    ws = ensure_worktree(repo, root, 1, "Add greeting")
    assert ws.created
    assert ws.path == root.resolve() / "1"
    assert ws.branch == "shipline/1-add-greeting"
    assert git(ws.path, "branch", "--show-current") == ws.branch
    assert (ws.path / "app.py").read_text() == "def answer():\n    return 42\n"
    (ws.path / "greet.py").write_text("x = 1\n")
    git(ws.path, "add", "greet.py")
    git(ws.path, "commit", "-q", "-m", "greet")
    assert not (repo / "greet.py").exists()
    assert git(repo, "rev-list", "--count", "main") == "1"


def test_resumed_ticket_reuses_its_worktree_and_keeps_uncommitted_work(
    repo: Path, root: Path
) -> None:
    first = ensure_worktree(repo, root, 2, "Resume me")
    (first.path / "wip.txt").write_text("work in progress")
    again = ensure_worktree(repo, root, 2, "Resume me")
    assert not again.created
    assert again.path == first.path
    assert again.branch == first.branch
    assert (again.path / "wip.txt").read_text() == "work in progress"


def test_renamed_ticket_keeps_its_branch(repo: Path, root: Path) -> None:
    first = ensure_worktree(repo, root, 3, "Old title")
    remove_worktree(repo, root, 3)
    again = ensure_worktree(repo, root, 3, "A brand new title")
    assert again.branch == first.branch == "shipline/3-old-title"


def test_missing_base_and_non_repository_are_clear_errors(
    repo: Path, root: Path, tmp_path: Path
) -> None:
    with pytest.raises(WorkspaceError, match="base 'develop' names no commit"):
        ensure_worktree(repo, root, 4, "x", base="develop")
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(WorkspaceError, match="not a git repository"):
        ensure_worktree(plain, root, 4, "x")


# --- concurrency ------------------------------------------------------------------------------


def _assert_separate_worktrees(repo: Path, root: Path, ids: list[str]) -> None:
    listing = porcelain(repo)
    assert "locked" not in listing
    for tid in ids:
        path = root.resolve() / tid
        assert f"worktree {path}" in listing
        assert git(path, "branch", "--show-current").startswith(f"shipline/{tid}-")
        assert git(path, "status", "--porcelain") == ""
    assert len(listing.split("\n\n")) == len(ids) + 1


def test_four_worktrees_at_once_do_not_collide(repo: Path, root: Path) -> None:
    barrier = threading.Barrier(4)

    def work(tid: str) -> str:
        barrier.wait()
        ws = ensure_worktree(repo, root, tid, f"ticket {tid}")
        (ws.path / f"{tid}.txt").write_text(tid)
        git(ws.path, "add", f"{tid}.txt")
        git(ws.path, "commit", "-q", "-m", f"work on {tid}")
        return ws.branch

    ids = ["10", "11", "12", "13"]
    with ThreadPoolExecutor(4) as pool:
        branches = list(pool.map(work, ids))
    assert len(set(branches)) == 4
    _assert_separate_worktrees(repo, root, ids)
    for tid in ids:  # each branch holds its own commit, and only that one
        files = git(repo, "ls-tree", "--name-only", f"shipline/{tid}-ticket-{tid}")
        assert {f for f in files.split() if f.endswith(".txt")} == {f"{tid}.txt"}


def test_four_processes_at_once_do_not_collide(repo: Path, root: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from shipline.workspaces import ensure_worktree;"
        "ws = ensure_worktree(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], 'proc');"
        "print(ws.branch)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    ids = ["20", "21", "22", "23"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(repo), str(root), tid],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tid in ids
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    assert sorted(out.strip() for out, _ in outputs) == [f"shipline/{t}-proc" for t in ids]
    _assert_separate_worktrees(repo, root, ids)


def test_one_ticket_resumed_by_four_workers_at_once_gets_one_worktree(
    repo: Path, root: Path
) -> None:
    barrier = threading.Barrier(4)

    def work(_: int) -> tuple[Path, bool]:
        barrier.wait()
        ws = ensure_worktree(repo, root, 30, "shared")
        return ws.path, ws.created

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(4)))
    assert len({path for path, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, False, False, True]
    _assert_separate_worktrees(repo, root, ["30"])


# --- crash repair -----------------------------------------------------------------------------

_CRASH_HOOK = """#!/bin/sh
# Kills `git worktree add` (the hook's grandparent) and its child when the ref CRASH_ON
# reaches CRASH_STATE (prepared: not yet written; committed: written), once.
refs=$(cat)
[ "$1" = "$CRASH_STATE" ] || exit 0
[ -n "$CRASH_FLAG" ] && [ ! -e "$CRASH_FLAG" ] || exit 0
case "$refs" in
  *"$CRASH_ON"*)
    touch "$CRASH_FLAG"
    kill -9 "$(cut -d' ' -f4 /proc/$PPID/stat)" "$PPID"
    ;;
esac
exit 0
"""


def _arm_crash(
    repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, on: str, state: str
) -> None:
    hook = repo / ".git" / "hooks" / "reference-transaction"
    hook.write_text(_CRASH_HOOK)
    hook.chmod(0o755)
    monkeypatch.setenv("CRASH_FLAG", str(tmp_path / "crashed"))
    monkeypatch.setenv("CRASH_ON", on)
    monkeypatch.setenv("CRASH_STATE", state)


def test_crash_during_worktree_add_is_repaired_on_resume(
    repo: Path, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # git is killed after it registered the worktree (locked 'initializing') and checked out.
    _arm_crash(repo, monkeypatch, tmp_path, on="ORIG_HEAD", state="prepared")
    with pytest.raises(WorkspaceError, match="worktree add"):
        ensure_worktree(repo, root, 40, "Crashy")
    assert "locked initializing" in porcelain(repo)
    ws = ensure_worktree(repo, root, 40, "Crashy")
    assert ws.created
    assert any("initializing" in note for note in ws.repaired)
    assert "locked" not in porcelain(repo)
    assert git(ws.path, "branch", "--show-current") == "shipline/40-crashy"
    assert git(ws.path, "status", "--porcelain") == ""
    assert (ws.path / "app.py").exists()


def test_crash_after_branch_creation_reuses_the_branch(
    repo: Path, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # git is killed right after `-b` created the branch, before any worktree existed.
    _arm_crash(repo, monkeypatch, tmp_path, on="refs/heads/shipline/41", state="committed")
    with pytest.raises(WorkspaceError):
        ensure_worktree(repo, root, 41, "Branch only")
    assert git(repo, "branch", "--list", "shipline/41-branch-only")
    ws = ensure_worktree(repo, root, 41, "Branch only")
    assert ws.branch == "shipline/41-branch-only"
    assert git(ws.path, "branch", "--show-current") == ws.branch


def test_existing_branch_without_worktree_is_checked_out_not_recreated(
    repo: Path, root: Path
) -> None:
    git(repo, "branch", "shipline/42-earlier-work")
    git(repo, "checkout", "-q", "shipline/42-earlier-work")
    (repo / "earlier.txt").write_text("kept")
    git(repo, "add", "earlier.txt")
    git(repo, "commit", "-q", "-m", "earlier work")
    git(repo, "checkout", "-q", "main")
    ws = ensure_worktree(repo, root, 42, "Earlier work")
    assert (ws.path / "earlier.txt").read_text() == "kept"


@pytest.mark.parametrize("leftover", ["empty", "dangling-dotgit"])
def test_half_created_directory_is_cleared_and_recreated(
    repo: Path, root: Path, leftover: str
) -> None:
    path = root / "43"
    path.mkdir(parents=True)
    if leftover == "dangling-dotgit":
        (path / ".git").write_text(f"gitdir: {repo / '.git' / 'worktrees' / '43'}\n")
        (path / "app.py").write_text("half written")
    ws = ensure_worktree(repo, root, 43, "Half")
    assert ws.created
    assert (ws.path / "app.py").read_text() == "def answer():\n    return 42\n"
    assert git(ws.path, "status", "--porcelain") == ""


def test_stale_worktree_entry_after_deleted_directory_is_pruned(repo: Path, root: Path) -> None:
    import shutil

    first = ensure_worktree(repo, root, 44, "Deleted by hand")
    shutil.rmtree(first.path)
    again = ensure_worktree(repo, root, 44, "Deleted by hand")
    assert again.created
    assert again.branch == first.branch
    assert "prunable" not in porcelain(repo)


def test_foreign_directory_in_the_way_is_never_deleted(repo: Path, root: Path) -> None:
    path = root / "45"
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("a user's file")
    with pytest.raises(WorkspaceError, match="not a shipline worktree"):
        ensure_worktree(repo, root, 45, "Blocked")
    assert (path / "notes.txt").read_text() == "a user's file"


# --- setup ------------------------------------------------------------------------------------


def test_setup_commands_run_once_per_worktree_with_output_recorded(repo: Path, root: Path) -> None:
    setup = ["echo installing deps; echo run >> .setup-runs", "cp app.py app_copy.py"]
    ws = ensure_worktree(repo, root, 50, "Setup", setup=setup)
    again = ensure_worktree(repo, root, 50, "Setup", setup=setup)
    assert (ws.path / ".setup-runs").read_text() == "run\n"
    assert (ws.path / "app_copy.py").exists()
    assert ws.setup is not None and ws.setup.ok
    assert again.setup == ws.setup
    assert [step.exit_code for step in ws.setup.steps] == [0, 0]
    log = (ws.git_dir / SETUP_LOG).read_text()
    assert "$ echo installing deps" in log and "installing deps\n" in log
    # the record lives in the worktree's git dir, not in its tree
    assert (ws.git_dir / SETUP_RECORD).is_file()
    assert not (ws.path / SETUP_RECORD).exists()
    assert SETUP_RECORD not in git(ws.path, "status", "--porcelain", "--ignored")
    assert ws.git_dir.parent == repo.resolve() / ".git" / "worktrees"


def test_failed_setup_is_reported_recorded_and_retried(repo: Path, root: Path) -> None:
    with pytest.raises(SetupError, match=r"`echo boom; exit 3` \(exit 3\)") as info:
        ensure_worktree(repo, root, 51, "Bad setup", setup=["echo boom; exit 3", "echo never"])
    assert SETUP_LOG in str(info.value)
    ws = ensure_worktree(repo, root, 51, "Bad setup")  # the worktree itself is usable
    record = read_setup(ws.git_dir)
    assert record is not None and not record.ok
    assert [step.command for step in record.steps] == ["echo boom; exit 3"]
    assert "boom" in (ws.git_dir / SETUP_LOG).read_text()
    fixed = ensure_worktree(repo, root, 51, "Bad setup", setup=["echo fixed"])
    assert fixed.setup is not None and fixed.setup.ok


def test_setup_log_has_secrets_redacted(repo: Path, root: Path) -> None:
    ws = ensure_worktree(repo, root, 52, "Secret", setup=["echo OPENAI_API_KEY=abc123secret"])
    log = (ws.git_dir / SETUP_LOG).read_text()
    assert "abc123secret" not in log
    assert "OPENAI_API_KEY=***" in log


# --- remove, list, prune ----------------------------------------------------------------------


def test_remove_worktree_keeps_the_branch_unless_asked(repo: Path, root: Path) -> None:
    ws = ensure_worktree(repo, root, 60, "Gone")
    git(repo, "update-ref", "refs/shipline/60/base-3", "HEAD")  # a code step's base
    git(repo, "update-ref", "refs/shipline/600/base-4", "HEAD")  # another ticket's
    assert remove_worktree(repo, root, 60)
    assert not ws.path.exists()
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/shipline/").split()
    assert refs == ["refs/shipline/600/base-4"]
    assert git(repo, "branch", "--list", ws.branch)
    assert not remove_worktree(repo, root, 60)  # idempotent
    assert remove_worktree(repo, root, 60, delete_branch=True)
    assert not git(repo, "branch", "--list", ws.branch)


def test_list_workspaces_reports_state_branch_and_disk_use(repo: Path, root: Path) -> None:
    ensure_worktree(repo, root, 70, "Listed")
    big = ensure_worktree(repo, root, 71, "Big")
    (big.path / "blob.bin").write_bytes(os.urandom(256 * 1024))
    (root / "72").mkdir()  # orphan left by a crash
    (root / "73").mkdir()
    (root / "73" / "mine.txt").write_text("user data")  # not ours
    infos = {i.ticket_id: i for i in list_workspaces(repo, root)}
    assert {k: i.state for k, i in infos.items()} == {
        "70": "ok",
        "71": "ok",
        "72": "orphan",
        "73": "foreign",
    }
    assert infos["70"].branch == "shipline/70-listed"
    assert infos["70"].disk_bytes > 0
    assert infos["71"].disk_bytes >= infos["70"].disk_bytes + 256 * 1024


def _backdate(info_path: Path, git_dir: Path, seconds: float) -> None:
    old = time.time() - seconds
    for p in [
        info_path,
        git_dir / LAST_USED,
        git_dir / "index",
        git_dir / "HEAD",
        git_dir / "logs" / "HEAD",
    ]:
        if p.exists():
            os.utime(p, (old, old))


def test_prune_removes_orphans_and_expired_workspaces_but_keeps_active_ones(
    repo: Path, root: Path
) -> None:
    active = ensure_worktree(repo, root, 80, "Active")
    recent = ensure_worktree(repo, root, 81, "Merged today")
    expired = ensure_worktree(repo, root, 82, "Merged last week")
    _backdate(expired.path, expired.git_dir, 7 * 86400)
    _backdate(active.path, active.git_dir, 7 * 86400)  # old, but its ticket is still open
    (root / "83").mkdir()  # orphan
    (root / "84").mkdir()
    (root / "84" / "keep.txt").write_text("foreign")

    removed = prune(repo, root, keep={80}, retention=timedelta(days=1))

    assert sorted(i.ticket_id for i in removed) == ["82", "83"]
    assert active.path.exists() and recent.path.exists()
    assert not expired.path.exists() and not (root / "83").exists()
    assert (root / "84" / "keep.txt").exists()
    assert git(repo, "branch", "--list", expired.branch)  # the work is kept in its branch
    assert str(expired.path) not in porcelain(repo)


def test_prune_plan_decides_from_state_keep_and_retention() -> None:
    def info(tid: str, state: str, last_used: float) -> WorkspaceInfo:
        return WorkspaceInfo(tid, Path(tid), None, state, 0, last_used)  # type: ignore[arg-type]

    infos = [
        info("kept", "ok", 0),
        info("old", "ok", 0),
        info("fresh", "ok", 990),
        info("broken", "broken", 990),
        info("orphan", "orphan", 990),
        info("foreign", "foreign", 0),
        info("kept-orphan", "orphan", 0),
    ]
    doomed = prune_plan(infos, keep={"kept", "kept-orphan"}, retention_s=100, now=1000)
    assert [i.ticket_id for i in doomed] == ["old", "broken", "orphan"]


# --- file blocks ------------------------------------------------------------------------------


def test_file_blocks_are_written_and_committed(repo: Path, root: Path) -> None:
    ws = ensure_worktree(repo, root, 90, "Blocks")
    applied = apply_file_blocks(
        ws.path,
        [("pkg/new.py", "VALUE = 1\n"), ("app.py", "def answer():\n    return 43\n")],
        "implement: change the answer",
    )
    assert applied.commit == git(ws.path, "rev-parse", "HEAD")
    assert applied.paths == ("pkg/new.py", "app.py")
    assert git(ws.path, "log", "-1", "--format=%s") == "implement: change the answer"
    assert git(ws.path, "show", "--name-only", "--format=", "HEAD").split() == [
        "app.py",
        "pkg/new.py",
    ]
    assert git(ws.path, "status", "--porcelain") == ""
    again = apply_file_blocks(ws.path, [("pkg/new.py", "VALUE = 1\n")], "no change")
    assert again.commit is None


@pytest.mark.parametrize(
    "bad",
    [
        "/etc/passwd",
        "../outside.py",
        "pkg/../../outside.py",
        ".git/hooks/pre-commit",
        "sub/.GIT/config",
        "~/x",
        "C:/x",
        "",
        "a\0b",
    ],
)
def test_unsafe_paths_refuse_the_whole_set_of_blocks(repo: Path, root: Path, bad: str) -> None:
    ws = ensure_worktree(repo, root, 91, "Unsafe")
    head = git(ws.path, "rev-parse", "HEAD")
    with pytest.raises(UnsafePathError):
        apply_file_blocks(ws.path, [("ok.py", "x = 1\n"), (bad, "evil")], "evil")
    assert not (ws.path / "ok.py").exists()
    assert git(ws.path, "rev-parse", "HEAD") == head
    assert not (root / "outside.py").exists()


def test_symlink_escape_is_refused(repo: Path, root: Path, tmp_path: Path) -> None:
    ws = ensure_worktree(repo, root, 92, "Symlinks")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.txt").write_text("untouched")
    (ws.path / "escape_dir").symlink_to(outside)
    (ws.path / "escape_file").symlink_to(outside / "target.txt")
    for path in ["escape_dir/evil.py", "escape_file"]:
        with pytest.raises(UnsafePathError, match="symlink"):
            apply_file_blocks(ws.path, [(path, "evil")], "escape")
    assert (outside / "target.txt").read_text() == "untouched"
    assert not (outside / "evil.py").exists()


def test_locked_tests_show_any_edit_or_deletion(repo: Path, root: Path) -> None:
    ws = ensure_worktree(repo, root, 93, "Locks")
    apply_file_blocks(
        ws.path,
        [("tests/test_a.py", "def test_a():\n    assert 0\n"), ("tests/test_b.py", "B = 1\n")],
        "tests: failing tests",
    )
    locked = lock_files(ws.path, ["tests/test_b.py", "tests/test_a.py"])
    assert list(locked) == ["tests/test_a.py", "tests/test_b.py"]
    assert changed_locked_files(ws.path, locked) == []
    apply_file_blocks(ws.path, [("app.py", "def answer():\n    return 0\n")], "implement")
    assert changed_locked_files(ws.path, locked) == []
    (ws.path / "tests/test_a.py").write_text("def test_a():\n    assert 1\n")
    (ws.path / "tests/test_b.py").unlink()
    assert changed_locked_files(ws.path, locked) == ["tests/test_a.py", "tests/test_b.py"]


def test_hash_files_is_order_independent_and_content_sensitive(repo: Path, root: Path) -> None:
    ws = ensure_worktree(repo, root, 94, "Hash")
    a = hash_files(ws.path, ["app.py", "tests/test_app.py"])
    assert a == hash_files(ws.path, ["tests/test_app.py", "app.py"])
    assert len(a) == 64
    (ws.path / "app.py").write_text("changed")
    assert hash_files(ws.path, ["app.py", "tests/test_app.py"]) != a
    # a path and content that concatenate alike still hash apart
    assert hash_files(ws.path, ["missing.py"]) != hash_files(ws.path, ["missing.p"])
