"""`shipline demo`'s project: the sample repo with a shipline.toml, on the embedded model or
replayed. `shipline.api.run_demo` adds one feature, one hotfix and one epic and runs them.

Both run with a judge, the sample's pytest suite, as `shipline init` would set it: code phases
work in git worktrees and a finished ticket is merged into the sample's main branch. `--replay`
runs the tickets on the scripted provider with recorded good answers: every ticket is merged,
and main's tests pass. On the embedded model (SmolLM2-135M) most tickets stop in needs-human:
the deterministic checks and the judge catch what a 135M model cannot do, which is the point of
showing them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shlex
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

from shipline.config import scripted_toml
from shipline.demo.sample import write_sample_repo
from shipline.engine.detect import DetectedCommand, Target, detect_test_commands, read_repo
from shipline.engine.setup import render_sections
from shipline.errors import ConfigError
from shipline.judge.runner import JudgeResult, run_judge
from shipline.workspaces.git import Git, WorkspaceError

JUDGE_TIMEOUT_S = 120.0

LOCAL_CONFIG = """\
# shipline demo on the embedded model (SmolLM2-135M through llama.cpp): no key, no network.
# To see real work, point the tiers at a stronger model, e.g. an OpenAI-compatible server.
[providers.local]
kind = "local"

[tiers]
top = ["local"]
mid = ["local"]
cheap = ["local"]
local = ["local"]

# Kept short so the demo finishes in about two minutes on two CPU cores: two attempts a phase,
# short answers. Raise these (or drop them) with a stronger model.
[validator]
max_output_tokens = 96
[phases.discovery]
max_attempts = 2
max_output_tokens = 320
[phases.techspec]
max_attempts = 2
max_output_tokens = 320
[phases.plan]
max_attempts = 2
max_output_tokens = 320
[phases.diagnose]
max_attempts = 2
max_output_tokens = 320
[phases.split]
max_attempts = 2
max_output_tokens = 256
[phases.tests]
max_attempts = 2
max_output_tokens = 320
[phases.implement]
max_attempts = 2
max_output_tokens = 320
[phases.review]
max_attempts = 2
max_output_tokens = 256
"""

REPLAY_CONFIG = (
    "# shipline demo, replayed: the scripted provider answers from replay.yaml (recorded "
    "answers).\n" + scripted_toml("replay", "replay.yaml")
)

TARGET = "main"
"""The sample repository's branch: tickets start from it and merge into it."""

_NO_PLUGINS = "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1"


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return Git(repo, ("shipline demo", "demo@shipline.invalid")).run(*args)
    except WorkspaceError as exc:
        raise ConfigError(f"git failed in the demo's sample repository: {exc}") from None


def demo_judge(root: Path) -> DetectedCommand | None:
    """The sample's test command, as `shipline init` detects it, on the interpreter running
    shipline (the sample needs only pytest); None when pytest is not installed with shipline."""
    if importlib.util.find_spec("pytest") is None:
        return None
    python = shlex.quote(sys.executable)
    found = detect_test_commands(read_repo(root), str(root), python)
    if not found:
        return None
    return dataclasses.replace(
        found[0],
        command=f"{_NO_PLUGINS} {found[0].command}",
        notes=(
            "Python: the interpreter running shipline; the sample needs nothing but pytest.",
            f"{_NO_PLUGINS}: the pytest plugins installed next to shipline are not loaded "
            "(the sample uses none, and each run stays well under a second).",
        ),
    )


def prepare(directory: Path | None, replay: bool) -> tuple[Path, str]:
    """Create the sample repo, under git on branch main, with its shipline.toml (the judge as
    `shipline init` writes it) and replay script. The repo and its judge command ("" none)."""
    if directory is None:
        root = Path(tempfile.mkdtemp(prefix="shipline-demo-"))
    else:
        root = directory.resolve()
        if root.exists() and any(root.iterdir()):
            raise ConfigError(f"--dir {root} is not empty: name a new or empty folder")
        root.mkdir(parents=True, exist_ok=True)
    write_sample_repo(root)
    judge = demo_judge(root)
    sections = render_sections([judge] if judge else [], Target(TARGET, judge_ready=True))
    config = (REPLAY_CONFIG if replay else LOCAL_CONFIG) + "\n" + sections
    (root / "shipline.toml").write_text(config, encoding="utf-8")
    if replay:
        script = resources.files("shipline.demo").joinpath("replay.yaml")
        (root / "replay.yaml").write_text(script.read_text(encoding="utf-8"), encoding="utf-8")
    (root / ".gitignore").write_text(".shipline/\n__pycache__/\n", encoding="utf-8")
    _git(root, "init", "-q", "-b", TARGET)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "sample project")
    return root, judge.command if judge else ""


def commit_subjects(root: Path) -> dict[str, str]:
    """Every commit of the target branch: sha → subject."""
    out = _git(root, "log", "--format=%H%x09%s", TARGET).stdout
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


def judge_target(root: Path, command: str) -> JudgeResult:
    """The judge, once more, on the main checkout: the merged code's tests."""
    return run_judge(command, root, JUDGE_TIMEOUT_S)
