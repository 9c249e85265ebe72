"""`shipline demo`'s project: the sample repo with a shipline.toml, on the embedded model or
replayed. `shipline.api.run_demo` adds one feature, one hotfix and one epic and runs them.

On the embedded model (SmolLM2-135M) most tickets stop in needs-human: the deterministic
checks catch what a 135M model cannot do, which is the point of showing them. `--replay`
runs the same tickets on the scripted provider with recorded good answers and reaches done.
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

from shipline.config import scripted_toml
from shipline.demo.sample import write_sample_repo
from shipline.errors import ConfigError
from shipline.workspaces.git import Git, WorkspaceError

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


def _git(repo: Path, *args: str) -> None:
    try:
        Git(repo, ("shipline demo", "demo@shipline.invalid")).run(*args)
    except WorkspaceError as exc:
        raise ConfigError(f"the demo cannot make its sample repository: {exc}") from None


def prepare(directory: Path | None, replay: bool) -> Path:
    """Create the sample repo with its shipline.toml (and replay script)."""
    if directory is None:
        root = Path(tempfile.mkdtemp(prefix="shipline-demo-"))
    else:
        root = directory.resolve()
        if root.exists() and any(root.iterdir()):
            raise ConfigError(f"--dir {root} is not empty: name a new or empty folder")
        root.mkdir(parents=True, exist_ok=True)
    write_sample_repo(root)
    (root / "shipline.toml").write_text(REPLAY_CONFIG if replay else LOCAL_CONFIG, encoding="utf-8")
    if replay:
        script = resources.files("shipline.demo").joinpath("replay.yaml")
        (root / "replay.yaml").write_text(script.read_text(encoding="utf-8"), encoding="utf-8")
    (root / ".gitignore").write_text(".shipline/\n__pycache__/\n", encoding="utf-8")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "sample project")
    return root
