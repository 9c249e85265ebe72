"""PR mode: the branch is really pushed to a bare repository; `gh` is a stand-in.

GitHub is unreachable from the test machines, so the real `gh` cannot talk to a server. The
tests put a small executable `gh` first on PATH instead. It implements `gh pr list` and
`gh pr create` against a JSON state file and prints what the real gh prints: the new pull
request's URL on stdout, `--json url` as a compact JSON list, gh's own refusals and sign-in
message on stderr with its exit codes (1: failed, 4: authentication required).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import git
from shipline.workspaces.pr import (
    Forge,
    GitHubCli,
    PullRequest,
    PullRequestError,
    open_pull_request,
)
from test_git import assert_all_dead, hang_script

BRANCH = "shipline/7-shout"
BODY = 'Adds `shout()`.\n\nCloses #7; "quotes" and $dollars stay as written.\n'

GH = """#!{python}
import json, os, subprocess, sys

state_path = os.environ["FAKE_GH_STATE"]
with open(state_path) as f:
    state = json.load(f)
args = sys.argv[1:]
state["calls"].append(args)

def save():
    with open(state_path, "w") as f:
        json.dump(state, f)

def flag(name):
    return args[args.index(name) + 1] if name in args else None

def fail(code, message):
    save()
    sys.stderr.write(message + "\\n")
    sys.exit(code)

if state.get("fail"):
    fail(state["fail"]["code"], state["fail"]["stderr"])
if args[:2] == ["pr", "list"]:
    state_wanted = (flag("--state") or "open").upper()
    found = [
        {{"url": pr["url"]}}
        for pr in state["prs"]
        if pr["head"] == flag("--head") and pr["base"] == flag("--base")
        and state_wanted in (pr["state"], "ALL")
    ]
    save()
    print(json.dumps(found, separators=(",", ":")))
elif args[:2] == ["pr", "create"]:
    head, base = flag("--head"), flag("--base")
    pushed = subprocess.run(
        ["git", "--git-dir", state["remote"], "rev-parse", "--verify", "-q", "refs/heads/" + head],
        capture_output=True, text=True,
    ).stdout.strip()
    if not pushed:
        fail(1, "pull request create failed: GraphQL: Head sha can't be blank, Head ref must "
                "be a branch (createPullRequest)")
    for pr in state["prs"]:
        if pr["head"] == head and pr["base"] == base and pr["state"] == "OPEN":
            fail(1, f'a pull request for branch "{{head}}" into branch "{{base}}" already '
                    f'exists:\\n{{pr["url"]}}')
    body = sys.stdin.read() if flag("--body-file") == "-" else flag("--body")
    url = f"https://github.com/acme/widgets/pull/{{len(state['prs']) + 1}}"
    state["prs"].append({{"url": url, "head": head, "base": base, "title": flag("--title"),
                         "body": body, "state": "OPEN", "sha": pushed}})
    save()
    print(url)
else:
    fail(1, f"unknown command {{args[:2]!r}} for the gh stand-in")
"""


class GitHub:
    """The remote (a bare repository), the stand-in gh and its state, the ticket's worktree."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.remote = tmp / "remote.git"
        git(tmp, "init", "-q", "--bare", str(self.remote))
        self.repo = tmp / "repo"
        self.repo.mkdir()
        git(self.repo, "init", "-q", "-b", "main")
        (self.repo / "README.md").write_text("sample\n")
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", "init")
        git(self.repo, "remote", "add", "origin", str(self.remote))
        git(self.repo, "push", "-q", "origin", "main")
        self.worktree = tmp / "worktrees" / "7"
        git(self.repo, "worktree", "add", "-q", "-b", BRANCH, str(self.worktree), "main")
        self.commit("shout.py", "def shout(s):\n    return s.upper()\n")
        self.state_path = tmp / "gh-state.json"
        self.state_path.write_text(json.dumps({"remote": str(self.remote), "prs": [], "calls": []}))
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        (bin_dir / "gh").write_text(GH.format(python=sys.executable))
        (bin_dir / "gh").chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_GH_STATE", str(self.state_path))

    def commit(self, name: str, content: str, where: Path | None = None) -> str:
        where = where or self.worktree
        (where / name).write_text(content)
        git(where, "add", "-A")
        git(where, "commit", "-q", "-m", f"add {name}")
        return git(where, "rev-parse", "HEAD").strip()

    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.state_path.read_text()))

    def set_state(self, **changes: Any) -> None:
        self.state_path.write_text(json.dumps({**self.state(), **changes}))

    def pushed(self) -> str:
        return git(self.remote, "rev-parse", f"refs/heads/{BRANCH}").strip()

    def head(self) -> str:
        return git(self.worktree, "rev-parse", "HEAD").strip()

    def open(self, known_url: str | None = None, forge: Forge | None = None) -> PullRequest:
        return open_pull_request(
            self.worktree,
            branch=BRANCH,
            target="main",
            remote="origin",
            title="shipline #7: shout",
            body=BODY,
            known_url=known_url,
            forge=forge,
        )


@pytest.fixture
def github(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GitHub:
    return GitHub(tmp_path, monkeypatch)


def test_the_first_call_pushes_the_branch_and_opens_one_pull_request(github: GitHub) -> None:
    pr = github.open()
    assert pr == PullRequest("https://github.com/acme/widgets/pull/1", created=True)
    assert github.pushed() == github.head()
    [opened] = github.state()["prs"]
    assert opened["head"] == BRANCH and opened["base"] == "main"
    assert opened["title"] == "shipline #7: shout"
    assert opened["body"] == BODY  # through stdin, untouched by any shell
    assert opened["sha"] == github.head()  # the branch was pushed before gh was asked


def test_a_second_call_finds_the_open_pull_request_and_creates_none(github: GitHub) -> None:
    first = github.open()
    github.commit("more.py", "x = 1\n")  # an engine retry may add commits in between
    again = github.open()
    assert again == PullRequest(first.url, created=False)
    assert len(github.state()["prs"]) == 1
    assert [c[:2] for c in github.state()["calls"]].count(["pr", "create"]) == 1
    assert github.pushed() == github.head()


def test_a_known_url_re_pushes_the_rebased_branch_and_asks_gh_nothing(github: GitHub) -> None:
    first = github.open()
    old = github.pushed()
    github.commit("other.py", "y = 2\n", where=github.repo)  # the target moved on
    git(github.worktree, "rebase", "-q", "main")
    assert github.head() != old
    calls = len(github.state()["calls"])
    again = github.open(known_url=first.url)
    assert again == PullRequest(first.url, created=False)
    assert github.pushed() == github.head()  # force-pushed over the pre-rebase branch
    assert len(github.state()["calls"]) == calls
    assert len(github.state()["prs"]) == 1


class LateGitHub(GitHubCli):
    """Another worker opens the pull request between this one's look-up and its create."""

    def find(self, branch: str, target: str) -> str | None:
        return None


def test_a_pull_request_opened_meanwhile_is_found_from_ghs_refusal(github: GitHub) -> None:
    first = github.open()
    again = github.open(forge=LateGitHub(github.worktree))
    assert again == PullRequest(first.url, created=False)
    assert len(github.state()["prs"]) == 1


def test_commits_pushed_by_someone_else_are_never_overwritten(
    github: GitHub, tmp_path: Path
) -> None:
    first = github.open()
    other = tmp_path / "reviewer"
    git(tmp_path, "clone", "-q", "-b", BRANCH, str(github.remote), str(other))
    theirs = github.commit("fixup.py", "z = 3\n", where=other)
    git(other, "push", "-q", "origin", BRANCH)
    git(github.worktree, "fetch", "-q", "origin")  # even once their commit was fetched
    github.commit("mine.py", "w = 4\n", where=github.repo)
    git(github.worktree, "rebase", "-q", "main")
    with pytest.raises(PullRequestError) as caught:
        github.open(known_url=first.url)
    assert f"origin/{BRANCH} has commits that shipline did not push" in str(caught.value)
    assert github.pushed() == theirs


def test_gh_signed_out_is_a_pull_request_error_with_its_message(github: GitHub) -> None:
    github.set_state(
        fail={
            "code": 4,
            "stderr": "To get started with GitHub CLI, please run:  gh auth login\n"
            "Alternatively, populate the GH_TOKEN environment variable with a GitHub API "
            "authentication token.",
        }
    )
    with pytest.raises(PullRequestError) as caught:
        github.open()
    message = str(caught.value)
    assert message.startswith("`gh pr list` failed (exit 4): To get started with GitHub CLI")
    assert "gh auth login" in message


def test_gh_output_is_redacted_in_the_error(github: GitHub) -> None:
    token = "ghp_" + "a1B2" * 9
    github.set_state(fail={"code": 1, "stderr": f"HTTP 401: Bad credentials (token {token})"})
    with pytest.raises(PullRequestError) as caught:
        github.open()
    assert token not in str(caught.value)
    assert "ghp_***" in str(caught.value)


def test_gh_missing_is_a_pull_request_error_saying_so(
    github: GitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_git = tmp_path / "only-git"
    only_git.mkdir()
    (only_git / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    monkeypatch.setenv("PATH", str(only_git))
    with pytest.raises(PullRequestError) as caught:
        github.open()
    assert "`gh` is not installed (or not on PATH)" in str(caught.value)
    assert github.pushed() == github.head()  # the push itself went through


def test_a_hung_push_times_out_with_the_command_and_the_limit_and_leaves_no_process(
    github: GitHub, tmp_path: Path
) -> None:
    script, pids = hang_script(tmp_path, "receive-pack")
    git(github.repo, "config", "remote.origin.receivepack", str(script))
    started = time.monotonic()
    with pytest.raises(PullRequestError) as caught:
        open_pull_request(
            github.worktree,
            branch=BRANCH,
            target="main",
            remote="origin",
            title="shipline #7: shout",
            body=BODY,
            known_url=None,
            push_timeout_s=1,
        )
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert message.startswith(
        f"cannot push {BRANCH} to origin: `git push --quiet --force-with-lease "
        f"--force-if-includes origin refs/heads/{BRANCH}:refs/heads/{BRANCH}` did not finish "
        "in 1 s in "
    )
    assert "the remote did not answer" in message
    assert "[workspaces] git_network_timeout_s" in message
    assert_all_dead(pids)  # the remote's receive-pack went with the push
    assert github.state()["calls"] == []  # gh is never asked about an unpushed branch
