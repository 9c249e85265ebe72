"""Secret redaction for anything shipline writes down: tool-call records, audit log, logs.

`redact(text)` replaces API keys, bearer tokens, credentials in URLs, private key blocks and
`NAME=value` assignments whose name says secret (KEY, TOKEN, SECRET, PASSWORD…) with a marker
that keeps the kind of secret visible (`sk-ant-***`, `Bearer ***`, `API_KEY=***`).
It is a pure function; it errs on the side of redacting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"

# Words that make a variable or field name secret when they are one of its `_`/`-` parts.
_SECRET_WORDS = (
    r"KEY|APIKEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|PWD|PASSPHRASE|CREDENTIALS?|AUTH|COOKIE"
)
# A name such as OPENAI_API_KEY, db-password, token; not PWD alone (the working directory).
_SECRET_NAME = rf"(?:[A-Za-z0-9]+[_-])*(?:{_SECRET_WORDS})(?:[_-][A-Za-z0-9]+)*"
_VALUE = r"(?:\"[^\"\n]*\"|'[^'\n]*'|[^\s\"',;&|]+)"

# Order matters: specific token shapes first, generic assignments last.
_TOKEN_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)",
            re.DOTALL,
        ),
        r"-----BEGIN \1PRIVATE KEY----- *** -----END \1PRIVATE KEY-----",
    ),
    (re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{8,}"), "sk-ant-" + MASK),
    (re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,}"), "sk-" + MASK),
    (re.compile(r"\bgsk_[A-Za-z0-9]{16,}"), "gsk_" + MASK),
    (re.compile(r"\b(gh[pousr]_)[A-Za-z0-9]{20,}"), r"\1" + MASK),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"), "github_pat_" + MASK),
    (re.compile(r"\bglpat-[A-Za-z0-9_\-]{16,}"), "glpat-" + MASK),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"), "xox-" + MASK),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "AKIA" + MASK),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), "AIza" + MASK),
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), "hf_" + MASK),
    (
        re.compile(r"\b((?:Proxy-)?Authorization\s*:\s*)(?:[A-Za-z]+\s+)?[^\s\"']+", re.IGNORECASE),
        r"\1" + MASK,
    ),
    (re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=\-]{8,}", re.IGNORECASE), r"\1 " + MASK),
    # scheme://user:password@host
    (
        re.compile(r"\b([a-z][a-z0-9+.\-]*://[^\s:/@]+):[^\s@/]+@", re.IGNORECASE),
        r"\1:" + MASK + "@",
    ),
)

# NAME=value (env assignments, CLI flags --token=value): no spaces around `=`.
_ASSIGNMENT = re.compile(rf"(?<![A-Za-z0-9_])({_SECRET_NAME})=({_VALUE})", re.IGNORECASE)
# "name": "value" / name: value (JSON, YAML, HTTP headers such as `X-Api-Key: value`).
_FIELD = re.compile(
    rf"(?<![A-Za-z0-9_])([\"']?)({_SECRET_NAME})\1(\s*:\s*)({_VALUE})", re.IGNORECASE
)
_PWD_ONLY = re.compile(r"(?:PWD|OLDPWD)", re.IGNORECASE)


def _masked_value(value: str) -> str:
    if value[:1] in "\"'" and value[-1:] == value[:1] and len(value) >= 2:
        return value[0] + MASK + value[0]
    return MASK


def _assignment(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    if _PWD_ONLY.fullmatch(name) or value.strip("\"'") in ("", MASK):
        return match.group(0)
    return f"{name}={_masked_value(value)}"


def _field(match: re.Match[str]) -> str:
    quote, name, sep, value = match.groups()
    if _PWD_ONLY.fullmatch(name) or value.strip("\"'") in ("", MASK) or value.startswith("{"):
        return match.group(0)
    return f"{quote}{name}{quote}{sep}{_masked_value(value)}"


def redact(text: str) -> str:
    """Return `text` with every secret it recognises replaced by a marker."""
    for pattern, replacement in _TOKEN_PATTERNS:
        text = pattern.sub(replacement, text)
    text = _ASSIGNMENT.sub(_assignment, text)
    return _FIELD.sub(_field, text)


def redact_obj(value: Any) -> Any:
    """Redact every string inside nested dicts, lists and tuples; values under secret keys too."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and is_secret_name(key) and isinstance(item, str) and item:
                out[key] = MASK
            else:
                out[key] = redact_obj(item)
        return out
    if isinstance(value, list | tuple):
        return type(value)(redact_obj(item) for item in value)
    return value


_SECRET_NAME_FULL = re.compile(_SECRET_NAME, re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """True when a variable or field name says it holds a secret (OPENAI_API_KEY, token)."""
    return bool(_SECRET_NAME_FULL.fullmatch(name)) and not _PWD_ONLY.fullmatch(name)


def scrub_env(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of an environment without the variables whose names say they hold secrets."""
    return {name: value for name, value in environ.items() if not is_secret_name(name)}
