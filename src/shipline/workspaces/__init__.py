"""Workspaces: git (one way to run it), a git worktree per ticket, strict edits and safe writes
of file blocks into it, and the merge queue."""

from shipline.workspaces.edits import EditError, plan_writes, whole_file_objection
from shipline.workspaces.files import (
    AppliedFiles,
    apply_file_blocks,
    changed_locked_files,
    check_relative,
    hash_files,
    lock_files,
    resolve_inside,
)
from shipline.workspaces.git import Git, GitTimeout, WorkspaceError
from shipline.workspaces.worktree import (
    SetupError,
    SetupRecord,
    UnsafePathError,
    Workspace,
    WorkspaceInfo,
    branch_name,
    default_root,
    disk_usage,
    ensure_worktree,
    list_workspaces,
    prune,
    prune_plan,
    read_setup,
    remove_worktree,
)

__all__ = [
    "AppliedFiles",
    "EditError",
    "Git",
    "GitTimeout",
    "SetupError",
    "SetupRecord",
    "UnsafePathError",
    "Workspace",
    "WorkspaceError",
    "WorkspaceInfo",
    "apply_file_blocks",
    "branch_name",
    "changed_locked_files",
    "check_relative",
    "default_root",
    "disk_usage",
    "ensure_worktree",
    "hash_files",
    "list_workspaces",
    "lock_files",
    "plan_writes",
    "prune",
    "prune_plan",
    "read_setup",
    "remove_worktree",
    "resolve_inside",
    "whole_file_objection",
]
