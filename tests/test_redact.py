"""Secret redaction: keys, tokens and secret assignments never reach a record or a log."""

from __future__ import annotations

from typing import Any

import pytest

from shipline.redact import is_secret_name, redact, redact_obj, scrub_env

OPENAI = "sk-proj-Abc123DEF456ghi789JKL012mno345"
ANTHROPIC = "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
GROQ = "gsk_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"
GITHUB = "ghp_" + "A" * 36


@pytest.mark.parametrize(
    ("text", "secret", "marker"),
    [
        (f"export OPENAI={OPENAI}", OPENAI, "sk-***"),
        (f"key is {ANTHROPIC}.", ANTHROPIC, "sk-ant-***"),
        (f"GROQ {GROQ}", GROQ, "gsk_***"),
        (f"git remote add origin https://{GITHUB}@github.com/a/b", GITHUB, "ghp_***"),
        (
            "github_pat_11ABCDEFG0123456789_abcdefghijKLMNOP",
            "11ABCDEFG0123456789",
            "github_pat_***",
        ),
        ("curl -H 'Authorization: Bearer abc.def.ghi-123456'", "abc.def.ghi-123456", "***"),
        ("got Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig back", "eyJhbGciOiJIUzI1NiJ9", "Bearer ***"),
        ("https://alice:s3cr3tpw@db.example.com/x", "s3cr3tpw", "https://alice:***@"),
        ("AWS AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE", "AKIA***"),
    ],
)
def test_known_token_shapes_are_masked_and_keep_their_kind(
    text: str, secret: str, marker: str
) -> None:
    out = redact(text)
    assert secret not in out
    assert marker in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("OPENAI_API_KEY=abc123 pytest", "OPENAI_API_KEY=*** pytest"),
        ("export GH_TOKEN='tok en'", "export GH_TOKEN='***'"),
        ('DB_PASSWORD="hunter2" ./run', 'DB_PASSWORD="***" ./run'),
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "AWS_SECRET_ACCESS_KEY=***"),
        ("tool --token=abcdef --verbose", "tool --token=*** --verbose"),
        ('{"api_key": "abc123", "model": "x"}', '{"api_key": "***", "model": "x"}'),
        ("password: hunter2", "password: ***"),
    ],
)
def test_secret_assignments_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "PWD=/home/me/project",
        "MONKEY=banana TURKEY=ham",
        "pytest -q tests/test_api.py::test_sk_prefix",
        "4 passed in 0.12s; Bearer of bad news",
        "sk-short",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_private_key_block_is_masked_whole() -> None:
    block = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        "b3BlbnNzaC1rZXktdjEA\nAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----"
    )
    out = redact(f"before\n{block}\nafter")
    assert "b3BlbnNzaC1rZXktdjEA" not in out
    assert out.startswith("before\n-----BEGIN OPENSSH PRIVATE KEY----- ***")
    assert out.endswith("after")


def test_redaction_is_idempotent() -> None:
    text = f"OPENAI_API_KEY={OPENAI} and {GITHUB}"
    once = redact(text)
    assert redact(once) == once


def test_redact_obj_walks_nested_arguments_and_masks_secret_keys() -> None:
    args: dict[str, Any] = {
        "command": f"OPENAI_API_KEY={OPENAI} pytest",
        "env": {"GH_TOKEN": "plainvalue", "HOME": "/home/me"},
        "argv": ["--api-key", ANTHROPIC],
        "timeout": 5,
    }
    out = redact_obj(args)
    assert out == {
        "command": "OPENAI_API_KEY=*** pytest",
        "env": {"GH_TOKEN": "***", "HOME": "/home/me"},
        "argv": ["--api-key", "sk-ant-***"],
        "timeout": 5,
    }
    assert args["env"]["GH_TOKEN"] == "plainvalue"  # the input is not mutated


def test_scrub_env_drops_secret_variables_only() -> None:
    env = {"PATH": "/bin", "PWD": "/x", "ANTHROPIC_API_KEY": "k", "GITHUB_TOKEN": "t", "LANG": "C"}
    assert scrub_env(env) == {"PATH": "/bin", "PWD": "/x", "LANG": "C"}
    assert is_secret_name("db-password")
    assert not is_secret_name("KEYBOARD_LAYOUT")
