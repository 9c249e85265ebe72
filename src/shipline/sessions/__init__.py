"""Coding sessions: the built-in agent loop, its worktree-confined tools, and the external
agent CLIs (codex, claude, gemini, aider) as session runners."""

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
from shipline.sessions.external import AgentUnavailable, ExternalAgent
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
    "AgentUnavailable",
    "ExternalAgent",
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
