"""`shipline init`: write a commented shipline.toml and create the store."""

from __future__ import annotations

from pathlib import Path

from shipline.config import CONFIG_FILE, STATE_DIR, load_settings
from shipline.errors import ConfigError
from shipline.store.db import open_store
from shipline.workspaces.git import Git, WorkspaceError

CONFIG_TEMPLATE = """\
# shipline configuration. Every key is optional; docs/config.md lists them all with defaults.

[store]
# SQLite (WAL) by default; a team shares PostgreSQL: url = "postgresql://user@host:5432/db"
url = "sqlite:///.shipline/shipline.db"

# Providers: where completions come from. The embedded default needs no key and no network.
[providers.local]
kind = "local"            # llama.cpp; model_path = "/path/to/any.gguf" to use another GGUF
model = "SmolLM2-135M-Instruct"

# Tiers map to ordered provider chains (the first that answers wins).
# SmolLM2-135M is weak: point "top" and "mid" at a stronger model for real work.
[tiers]
top = ["local"]
mid = ["local"]
cheap = ["local"]
local = ["local"]

# Routes: ticket kind (or "KIND.laneN") -> phases.
[routes]
feature = ["discovery", "techspec", "plan", "tests", "implement", "review"]
hotfix = ["diagnose", "tests", "implement", "review"]
epic = ["discovery", "techspec", "split"]

# Per-phase settings, e.g.:
# [phases.plan]
# tier = "top"
# max_attempts = 3
# input_token_budget = 3000
"""


def init_project(root: Path, db: str | None = None) -> tuple[bool, str]:
    """Write shipline.toml (unless present) and migrate the store. Idempotent."""
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory")
    config = root / CONFIG_FILE
    created = not config.exists()
    if created:
        config.write_text(CONFIG_TEMPLATE, encoding="utf-8")
    settings = load_settings(config)
    store = open_store(
        db or settings.store.url, root, create=True, busy_timeout_s=settings.store.busy_timeout_s
    )
    store.close()
    _ignore_state_dir(root)
    return created, store.display_url


def _ignore_state_dir(root: Path) -> None:
    """Keep the store out of git: add .shipline/ to .gitignore in a git repo."""
    try:
        if not Git(root).ok("rev-parse", "--is-inside-work-tree"):
            return
    except WorkspaceError:  # no git here: nothing to keep the store out of
        return
    ignore = root / ".gitignore"
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.exists() else []
    if f"{STATE_DIR}/" not in lines and STATE_DIR not in lines:
        lines.append(f"{STATE_DIR}/")
        ignore.write_text("\n".join(lines) + "\n", encoding="utf-8")
