"""Phase and validator prompts: rendered as the engine renders them, block by block."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from jinja2 import Environment, PackageLoader, StrictUndefined, UndefinedError

from shipline.engine.verdict import read_verdict
from shipline.phases import PHASES, VALIDATOR_TEMPLATE, PhaseSpec, get_phase

# The embedded default model has a context of a few thousand tokens: the fixed part of a
# prompt (everything but the ticket, inputs and history) must leave room for them.
MAX_FIXED_PROMPT_CHARS = 2600


@dataclass(frozen=True)
class Ticket:
    id: int = 42
    kind: str = "feature"
    title: str = "Add a --shout flag to greet"
    body: str = "Print the greeting in upper case."
    lane: int = 1
    sensitive: bool = False


def engine_render(template: str, variables: dict[str, Any]) -> tuple[str, str]:
    """Exactly what the engine does: a strict environment, each block rendered on its own."""
    env = Environment(
        loader=PackageLoader("shipline.phases", "templates"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    tmpl = env.get_template(template)
    system = "".join(tmpl.blocks["system"](tmpl.new_context(variables)))
    user = "".join(tmpl.blocks["user"](tmpl.new_context(variables)))
    return system, user


def variables(phase: PhaseSpec, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ticket": Ticket(),
        "inputs": {name: f"<<text of {name}>>" for name in phase.inputs},
        "history": [],
        "note": None,
        "deliverable": phase.deliverable,
        "phase": phase,
    }
    return base | overrides


@pytest.mark.parametrize("name", sorted(PHASES))
def test_every_phase_template_renders_system_and_user_blocks(name: str) -> None:
    phase = get_phase(name)
    system, user = engine_render(phase.template, variables(phase))
    assert system.strip() and user.strip()
    assert "Add a --shout flag to greet" in user
    assert "Print the greeting in upper case." in user
    assert phase.deliverable in user


@pytest.mark.parametrize("name", sorted(PHASES))
def test_prompts_show_every_declared_input_given_and_nothing_else(name: str) -> None:
    phase = get_phase(name)
    system, user = engine_render(phase.template, variables(phase))
    for input_name in phase.inputs:
        assert f'<file name="{input_name}">\n<<text of {input_name}>>\n</file>' in user
    assert "<<text of" not in system
    if phase.inputs:
        present = {phase.inputs[0]: "only this one"}
        _, user = engine_render(phase.template, variables(phase, inputs=present))
        assert user.count("<file name=") == 1


@pytest.mark.parametrize("name", sorted(PHASES))
def test_prompts_show_the_objections_of_every_earlier_attempt(name: str) -> None:
    phase = get_phase(name)
    history = [
        {"attempt": 1, "objections": ["R3 is not cited by any component in design.md"]},
        {"attempt": 2, "objections": ["D2 cites no requirement", "design.md cites R9"]},
    ]
    _, user = engine_render(phase.template, variables(phase, history=history))
    first = user.index("Attempt 1:\n- R3 is not cited by any component in design.md")
    second = user.index("Attempt 2:\n- D2 cites no requirement\n- design.md cites R9")
    assert first < second
    assert "must fix every objection above" in user
    assert "must not undo the fixes made for earlier" in user


@pytest.mark.parametrize("name", sorted(PHASES))
def test_a_first_attempt_has_no_history_section(name: str) -> None:
    phase = get_phase(name)
    _, user = engine_render(phase.template, variables(phase))
    assert "Earlier attempts" not in user
    assert "Note from a human" not in user


def test_a_human_retry_note_is_shown() -> None:
    phase = get_phase("plan")
    _, user = engine_render(phase.template, variables(phase, note="Use pytest-style tables."))
    assert "# Note from a human (follow it)\nUse pytest-style tables." in user


@pytest.mark.parametrize("name", sorted(PHASES))
def test_fixed_prompt_text_fits_the_small_default_model(name: str) -> None:
    phase = get_phase(name)
    empty_ticket = Ticket(title="", body="")
    system, user = engine_render(phase.template, variables(phase, ticket=empty_ticket, inputs={}))
    assert len(system) + len(user) <= MAX_FIXED_PROMPT_CHARS


@pytest.mark.parametrize(
    ("name", "format_markers"),
    [
        ("discovery", ["## Summary", "## Requirements", "- **R1**:", "Acceptance:"]),
        ("techspec", ["## Components", "- **D1** (R1, R2):", "Every requirement"]),
        ("plan", ["## Steps", "1. D1:", "## Files", "- path/to/module.py:", "## Test matrix",
                  "| requirement | case |", "success, failure or edge"]),
        ("diagnose", ["## Reproduction", "## Root cause", "## Fix plan", "## Regression test"]),
        ("tests", ["### File: tests/test_example.py", "```python", "test_r1_"]),
        ("implement", ["### File: path/to/module.py", "locked"]),
        ("fix-ci", ["### File: path/to/module.py", "ci.log", "locked"]),
        ("review", ["## Verdict", "approve", "changes-requested", "## Requirements checked"]),
        ("split", ['{"children": [', '"depends_on": ["first"]', '"feature" or "hotfix"',
                   "no\n  cycles"]),
    ],
)  # fmt: skip
def test_prompts_state_the_format_that_the_checks_accept(
    name: str, format_markers: list[str]
) -> None:
    phase = get_phase(name)
    _, user = engine_render(phase.template, variables(phase))
    for marker in format_markers:
        assert marker in user, marker


def test_diagnose_prompt_is_built_for_diagnosis_not_for_fixing() -> None:
    phase = get_phase("diagnose")
    system, user = engine_render(phase.template, variables(phase, ticket=Ticket(kind="hotfix")))
    assert "reproduce it" in system and "root cause" in system
    assert "You do not write the fix" in system
    assert "fails now and passes after the fix" in user


def test_tests_prompt_follows_the_route_it_is_given() -> None:
    phase = get_phase("tests")
    _, feature = engine_render(
        phase.template, variables(phase, inputs={"spec.md": "s", "plan.md": "p"})
    )
    _, hotfix = engine_render(phase.template, variables(phase, inputs={"diagnosis.md": "d"}))
    assert "Trace every requirement" in feature and "regression test" not in feature
    assert "regression test of diagnosis.md" in hotfix and "Trace every" not in hotfix


def test_hotfix_review_prompt_asks_for_no_requirements_section() -> None:
    phase = get_phase("review")
    inputs = {"diagnosis.md": "d", "implementation.md": "i"}
    system, user = engine_render(phase.template, variables(phase, inputs=inputs))
    assert "## Requirements checked" not in user
    assert "what the diagnosis asks" in system


def test_templates_refuse_a_missing_variable() -> None:
    phase = get_phase("discovery")
    partial = variables(phase)
    del partial["history"]
    with pytest.raises(UndefinedError):
        engine_render(phase.template, partial)


def test_validator_prompt_asks_for_a_json_verdict_on_the_deliverable() -> None:
    phase = get_phase("techspec")
    system, user = engine_render(
        VALIDATOR_TEMPLATE,
        {
            "phase": phase,
            "ticket": Ticket(),
            "deliverable": "design.md",
            "text": "## Components\n- **D1** (R1): flag\n",
            "inputs": {"spec.md": "## Requirements\n- **R1**: shout"},
        },
    )
    assert "JSON only" in system
    assert '<file name="design.md">\n## Components\n- **D1** (R1): flag\n</file>' in user
    assert '<file name="spec.md">' in user
    assert "Does design.md respect spec.md and the ticket?" in user
    assert phase.purpose in user
    # the format is described, not shown: an echo of the prompt holds no verdict to pass
    assert '"pass": the JSON boolean true' in user and '"objections": a list of strings' in user
    assert not [line for line in user.splitlines() if line.lstrip().startswith("{")]
    assert read_verdict(user)[0] is None and read_verdict(f"{system}\n\n{user}")[0] is None
