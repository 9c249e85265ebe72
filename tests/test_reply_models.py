"""The verdict and children.json are pydantic models; their JSON schemas come from the models
and are what constrained decoding is held to. Reading them stays as forgiving as it was."""

from __future__ import annotations

import json

import pytest

from conftest import replay_rules
from shipline.engine.verdict import parse_verdict, read_verdict
from shipline.phases import VERDICT_SCHEMA, Verdict
from shipline.phases.schema import json_schema
from shipline.phases.split import CHILD_KINDS, CHILDREN_SCHEMA, Children, parse_children
from shipline.phases.verdict import NO_REASON


def test_the_verdict_schema_is_the_models_closed_to_other_keys() -> None:
    assert json_schema(Verdict) == VERDICT_SCHEMA
    assert VERDICT_SCHEMA["additionalProperties"] is False
    assert "title" not in VERDICT_SCHEMA  # schema titles are noise to a grammar


def test_the_children_schema_comes_from_the_model_with_the_known_kinds() -> None:
    child = CHILDREN_SCHEMA["$defs"]["ChildTicket"]

    assert json_schema(Children) == CHILDREN_SCHEMA
    assert CHILDREN_SCHEMA["required"] == ["children"]
    assert CHILDREN_SCHEMA["properties"]["children"]["minItems"] == 1
    assert child["required"] == ["key", "kind", "title", "body", "depends_on"]
    assert child["properties"]["kind"]["enum"] == list(CHILD_KINDS) == ["feature", "hotfix"]
    assert child["properties"]["title"] == {"minLength": 1, "type": "string"}  # kept: a field
    assert child["additionalProperties"] is False


def test_both_schemas_become_llama_cpp_grammars() -> None:
    to_grammar = pytest.importorskip("llama_cpp.llama_grammar").json_schema_to_gbnf

    verdict = to_grammar(json.dumps(VERDICT_SCHEMA))
    children = to_grammar(json.dumps(CHILDREN_SCHEMA))

    assert 'root ::= "{" space pass-kv "," space objections-kv "}" space' in verdict
    assert "root ::=" in children
    assert '"\\"feature\\"" | "\\"hotfix\\""' in children  # kind: only the known kinds


def test_the_replayed_split_parses_into_typed_children() -> None:
    split = next(
        r["reply"] for r in replay_rules() if r["phase"] == "split" and r["role"] == "producer"
    )

    children = parse_children(split)

    assert [c.kind for c in children] == ["feature", "feature"]
    assert children[1].depends_on == (children[0].key,)
    assert all(c.title == c.title.strip() and c.body for c in children)


@pytest.mark.parametrize(
    ("text", "passed", "objections"),
    [
        ('{"pass": true, "objections": []}', True, []),
        ('```json\n{"pass": true, "objections": []}\n```', True, []),
        (
            'Here it is: {"pass": false, "objections": [" R2 is missing ", ""]}',
            False,
            ["R2 is missing"],
        ),
        ('I checked R1 and R2.\n```json\n{"pass": true, "objections": []}\n```\n', True, []),
        ('Notes: ```text\nR1 ok\n``` so:\n```\n{"pass": true}\n```', True, []),
        ('Other JSON may come first: {"R1": "ok"}\n{"pass": true, "objections": []}', True, []),
        ('{"pass": true}', True, []),  # a pass needs no list
        ('{"pass": false, "objections": []}', False, [NO_REASON]),  # a rejection says why
        ('{"pass": true, "objections": [], "confidence": 0.9}', True, []),  # extra keys ignored
    ],
)
def test_a_verdict_is_read_from_plain_fenced_or_chatty_answers(
    text: str, passed: bool, objections: list[str]
) -> None:
    verdict = parse_verdict(text)

    assert verdict is not None
    assert (verdict.passed, verdict.objections) == (passed, objections)


TRAILING = "the JSON is not the final element of the reply"
TWO = "the reply holds more than one JSON answer (an earlier one: "


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Sure! Looks great to me.", "no JSON value found"),
        ('{"pass": "true", "objections": []}', "$.pass: Input should be a valid boolean"),
        ('{"pass": true, "objections": "none"}', "$.objections: Input should be a valid list"),
        # an object nested in a refused answer is not an answer
        ('{"verdict": {"pass": true}}', "$.pass: Field required"),
        # the verdict is the reply's final element: nothing may follow it
        ('Here it is: {"pass": true, "objections": []} Thanks.', TRAILING),
        ('```json\n{"pass": true, "objections": []}\n```\nHope that helps!', TRAILING),
        # nothing verdict-like may precede it: an echo of examples, then an answer, is neither
        ('e.g. {"pass": true, "objections": []}\nso {"pass": false}', TWO + '{"pass": tru'),
        (
            'Examples: {"ok": {"objections": []}}\n```json\n{"pass": true}\n```',
            TWO + '{"ok": {"objecti',
        ),
        ("Looks good.\n```json\n{'pass': True}\n```", "the final fenced block is not one"),
        ("", "the reply is empty"),
        ("an echo of the prompt ends ```", "the reply ends with ``` but opens no fenced block"),
    ],
)
def test_a_bad_verdict_says_what_is_wrong_so_the_validator_can_be_told(
    text: str, problem: str
) -> None:
    verdict, said = read_verdict(text)

    assert verdict is None
    assert said.startswith(problem), said
