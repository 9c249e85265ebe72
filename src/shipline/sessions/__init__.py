"""Coding sessions: the built-in agent loop, its worktree-confined tools, and the external
agent CLIs (codex, claude, gemini, aider) as session runners.

Modules: base (what every runner shares: SessionResult, tool-call records, the adapter
protocol), agent (the built-in loop), tools (its tools), external (the external runner and the
adapters' registry), and one module per adapter (codex, claude, gemini, aider)."""

from shipline.sessions.agent import (
    AgentSession,
    FormatError,
    LimitsExceeded,
    SessionLimits,
    SubmitAction,
    Submitted,
    ToolAction,
    TranscriptError,
    parse_text_action,
    resume,
    run_session,
)
from shipline.sessions.base import AgentUnavailable, SessionResult, ToolCallRecord
from shipline.sessions.external import ExternalAgent
from shipline.sessions.tools import DEFAULT_DENY, TOOL_SPECS, ToolResult, WorktreeTools, denied_by

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
    "TranscriptError",
    "WorktreeTools",
    "denied_by",
    "parse_text_action",
    "resume",
    "run_session",
]
