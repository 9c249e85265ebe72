"""`shipline doctor` for front-ends: the engine's findings as a view, and whether all is well."""

from __future__ import annotations

from pathlib import Path

from shipline.api.views import View
from shipline.engine.doctor import diagnose


class DoctorFinding(View):
    check: str  # config, store, integrity, disk, git, judge
    ok: bool
    detail: str
    fix: str  # empty when fine, or when the detail says it


class DoctorReport(View):
    ok: bool  # no finding is a problem
    findings: list[DoctorFinding]


def doctor(start: Path, *, config: Path | None = None, db: str | None = None) -> DoctorReport:
    """Check the project at or above `start`: config, store, disk, git, the judge command."""
    findings = [DoctorFinding(**vars(f)) for f in diagnose(start, config, db)]
    return DoctorReport(ok=all(f.ok for f in findings), findings=findings)
