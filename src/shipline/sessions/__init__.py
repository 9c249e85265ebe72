"""Coding sessions: the built-in agent loop and its worktree-confined tools (and, later, the
external agent adapters)."""

from shipline.sessions.agent import (
    AgentSession,
    FormatError,
    LimitsExceeded,
    SessionLimits,
    SessionResult,
    SubmitAction,
    Submitted,
    ToolAction,
    parse_text_action,
    resume,
    run_session,
)
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
    "AgentSession",
    "FormatError",
    "LimitsExceeded",
    "SessionLimits",
    "SessionResult",
    "SubmitAction",
    "Submitted",
    "ToolAction",
    "ToolCallRecord",
    "ToolResult",
    "WorktreeTools",
    "denied_by",
    "parse_text_action",
    "resume",
    "run_session",
]
