"""A project: where shipline.toml lives, its settings, its store and its router."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shipline.config import CONFIG_FILE, Settings, find_config, load_settings
from shipline.errors import ConfigError
from shipline.store.db import Store, open_store

if TYPE_CHECKING:
    from shipline.providers.router import Router


@dataclass
class Project:
    root: Path
    settings: Settings
    store: Store
    _router: Router | None = field(default=None, repr=False)

    @property
    def router(self) -> Router:
        """Built on first use, so read-only commands never load a model."""
        if self._router is None:
            from shipline.providers.registry import build_router

            self._router = build_router(self.settings, self.root)
        return self._router

    def close(self) -> None:
        self.store.close()


def open_project(
    start: Path,
    *,
    config: Path | None = None,
    db: str | None = None,
    require: bool = True,
    create: bool = False,
    read_only: bool = False,
) -> Project:
    """Find shipline.toml at or above `start` (or use `config`) and open its store.

    `db` overrides `[store] url`. With `require=False` and no config found, the embedded
    defaults are used with `start` as the project root. The store must exist (`shipline
    init` makes it) unless `create`; `read_only` opens it for reading (see store.db.Store).
    """
    path = config if config is not None else find_config(start.resolve())
    if path is None and require:
        raise ConfigError(
            f"no {CONFIG_FILE} in {start.resolve()} or above: run `shipline init` first"
        )
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    settings = load_settings(path)
    root = path.parent.resolve() if path is not None else start.resolve()
    store = open_store(
        db or settings.store.url,
        root,
        create=create,
        read_only=read_only,
        busy_timeout_s=settings.store.busy_timeout_s,
    )
    return Project(root=root, settings=settings, store=store)
