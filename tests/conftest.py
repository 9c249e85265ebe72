"""Shared fixtures: real temp git repos, the real CLI in a subprocess, real SQLite/PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from shipline.config import scripted_toml

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def replay_rules() -> list[dict[str, Any]]:
    """The demo's recorded answers (shipline/demo/replay.yaml) as a list of rules."""
    text = resources.files("shipline.demo").joinpath("replay.yaml").read_text(encoding="utf-8")
    return list(yaml.safe_load(text)["rules"])


def shout_feature() -> dict[str, str]:
    from shipline.demo.sample import DEMO_TICKETS

    return next(t for t in DEMO_TICKETS if t["kind"] == "feature")


def demo_ticket(kind: str) -> dict[str, str]:
    from shipline.demo.sample import DEMO_TICKETS

    return next(t for t in DEMO_TICKETS if t["kind"] == kind)


class Project:
    """A real git repo with a shipline.toml that points every tier at a scripted provider."""

    def __init__(self, root: Path, db_url: str | None) -> None:
        self.root = root
        self.db_url = db_url

    def write_script(self, rules: list[dict[str, Any]]) -> None:
        (self.root / "script.yaml").write_text(yaml.safe_dump({"rules": rules}), encoding="utf-8")

    def cli(
        self, *args: str, expect: int = 0, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(self.root, *args, db=self.db_url, expect=expect, timeout=timeout)

    def show(self, ticket_id: int) -> dict[str, Any]:
        return json.loads(self.cli("ticket", "show", str(ticket_id), "--json").stdout)

    def tickets(self) -> list[dict[str, Any]]:
        return json.loads(self.cli("ticket", "list", "--json").stdout)

    def add(self, kind: str, title: str, body: str = "", *extra: str) -> int:
        out = self.cli(
            "ticket", "add", "--kind", kind, "--title", title, "--body", body, "--json", *extra
        )
        return int(json.loads(out.stdout)["id"])


def run_cli(
    cwd: Path, *args: str, db: str | None = None, expect: int = 0, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real `shipline` CLI. Never a traceback, whatever the exit code."""
    command = [sys.executable, "-m", "shipline"]
    if db:
        command += ["--db", db]
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    result = subprocess.run(
        command + list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    assert result.returncode == expect, (
        f"exit {result.returncode} (expected {expect})\nstdout:\n{result.stdout}\n"
        f"stderr:\n{result.stderr}"
    )
    return result


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


SCRIPTED_TOML = scripted_toml("script", "script.yaml")


def make_project(
    root: Path, db_url: str | None, extra_toml: str = "", rules: list[dict[str, Any]] | None = None
) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("sample\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    (root / "shipline.toml").write_text(SCRIPTED_TOML + extra_toml, encoding="utf-8")
    project = Project(root, db_url)
    project.write_script(rules if rules is not None else replay_rules())
    project.cli("init")
    return project


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the machine's server, dropped afterwards."""
    name = f"shipline_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:  # pragma: no cover - the server is part of the env
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required for the team backend: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """Run a test on the default SQLite store and on PostgreSQL."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def project(tmp_path: Path, store_url: str | None) -> Project:
    return make_project(tmp_path / "repo", store_url)


@pytest.fixture
def sqlite_project(tmp_path: Path) -> Project:
    return make_project(tmp_path / "repo", None)


def scripted_provider(tmp_path: Path, rules: list[dict[str, Any]]) -> Any:
    """A scripted provider (the product's) reading `rules` from a file in tmp_path."""
    from shipline.providers.scripted import ScriptedProvider

    path = tmp_path / "script.yaml"
    path.write_text(yaml.safe_dump({"rules": rules}, sort_keys=False))
    return ScriptedProvider.from_file("scripted", path)


class Recording:
    """Delegates to a provider and keeps the requests it was sent."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.in_house = inner, inner.name, True
        self.requests: list[Any] = []

    def complete(self, request: Any) -> Any:
        self.requests.append(request)
        return self.inner.complete(request)
