"""Coding sessions: the built-in agent loop's worktree-confined tools (and, later, the loop
itself and the external agent adapters)."""

from shipline.sessions.tools import (
    DEFAULT_DENY,
    TOOL_SPECS,
    ToolCallRecord,
    ToolResult,
    WorktreeTools,
    denied_by,
)

__all__ = [
    "DEFAULT_DENY",
    "TOOL_SPECS",
    "ToolCallRecord",
    "ToolResult",
    "WorktreeTools",
    "denied_by",
]
