"""The command-line front-end: `app` (typer) parses and calls `shipline.api`; `render` draws
the API's views with rich. Like the web board and the MCP server, it imports nothing below
`shipline.api`.
"""

from __future__ import annotations

from shipline.cli.app import CostBy, app, main

__all__ = ["CostBy", "app", "main"]
