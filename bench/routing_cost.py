"""Benchmark: cost per ticket with per-phase routing against "every phase on the top tier".

Part 1, cost. The same scripted token counts per call (below, one producer and one validator
call per phase of a feature ticket) are priced with real list prices from genai-prices
through `shipline.providers.pricing.call_cost`, once with shipline's default phase tiers
(techspec and plan on `top`, the other phases on `mid`, validators on `cheap`) and once
with every call on `top`. Three model sets are compared. For reference, RouteLLM reports
more than 85% savings at 95% of GPT-4's quality on MT-Bench; this bench measures price only,
not quality.

Part 2, overhead. A real llm-katan (echo backend) on 127.0.0.1 answers N chat completions
made directly with the `openai` SDK, then N more made through `Router.complete` with an
`OpenAICompatProvider` (guard, limiter, breaker, recording, pricing included). The
difference of medians is the router's own overhead per call. Both runs share one process
and one server, alternating in blocks, so machine noise hits both alike.

    python bench/routing_cost.py [--calls 300] [--skip-overhead]

Needs the `openai` SDK, genai-prices and llm-katan. Writes bench/results/routing_cost.json.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from shipline.config import DEFAULT_PHASE_TIERS, DEFAULT_ROUTES, ProviderSettings
from shipline.providers.pricing import call_cost

RESULTS = Path(__file__).resolve().parent / "results" / "routing_cost.json"

# (input, output) tokens of one call, per phase; validators read the deliverable and its
# sources and answer a short JSON verdict.
PRODUCER_TOKENS = {
    "discovery": (2500, 700),
    "techspec": (4000, 1500),
    "plan": (4500, 1500),
    "tests": (3500, 1200),
    "implement": (6000, 2500),
    "review": (5000, 800),
}
VALIDATOR_TOKENS = (1800, 150)

# tier -> (kind, model, base_url): three realistic sets a team might configure.
MODEL_SETS: dict[str, dict[str, tuple[str, str, str]]] = {
    "anthropic": {
        "top": ("anthropic", "claude-opus-4-5", ""),
        "mid": ("anthropic", "claude-sonnet-4-5", ""),
        "cheap": ("anthropic", "claude-haiku-4-5", ""),
    },
    "openai": {
        "top": ("openai", "gpt-5", ""),
        "mid": ("openai", "gpt-5-mini", ""),
        "cheap": ("openai", "gpt-4.1-mini", ""),
    },
    "mixed": {
        "top": ("anthropic", "claude-opus-4-5", ""),
        "mid": ("openai", "gpt-4.1", ""),
        "cheap": ("openai", "llama-3.1-8b-instant", "https://api.groq.com/openai/v1"),
    },
}


def ticket_cost(models: dict[str, tuple[str, str, str]], *, routed: bool) -> float | None:
    """USD for one feature ticket; None if any call's price is unknown."""
    total = 0.0
    for phase in DEFAULT_ROUTES["feature"]:
        calls = [
            (DEFAULT_PHASE_TIERS[phase] if routed else "top", PRODUCER_TOKENS[phase]),
            ("cheap" if routed else "top", VALIDATOR_TOKENS),
        ]
        for tier, (tokens_in, tokens_out) in calls:
            kind, model, base_url = models[tier]
            settings = ProviderSettings.model_validate(
                {"kind": kind, "model": model, "base_url": base_url}
            )
            cost = call_cost(settings, model, input_tokens=tokens_in, output_tokens=tokens_out)
            if cost is None:
                return None
            total += cost
    return total


def cost_rows() -> list[dict[str, Any]]:
    rows = []
    for name, models in MODEL_SETS.items():
        routed = ticket_cost(models, routed=True)
        all_top = ticket_cost(models, routed=False)
        saving = None if routed is None or not all_top else 1 - routed / all_top
        rows.append(
            {
                "model_set": name,
                "models": {tier: model for tier, (_, model, _) in models.items()},
                "routed_usd": routed,
                "all_top_usd": all_top,
                "saving": saving,
            }
        )
    return rows


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def overhead(calls: int) -> dict[str, Any]:
    import openai

    from shipline.providers.base import CompletionRequest, Message
    from shipline.providers.guard import GuardPolicy
    from shipline.providers.openai_compat import OpenAICompatProvider
    from shipline.providers.router import CallRecord, Router

    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="routing-bench-"))
    katan = Path(sys.executable).with_name("llm-katan")
    command = [
        str(katan), "--model", "echo", "--served-model-name", "gpt-4o-mini",
        "--backend", "echo", "--host", "127.0.0.1", "--port", str(port),
        "--providers", "openai", "--stats-file", str(workdir / "stats.json"),
        "--log-level", "warning", "--disable-dashboard",
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        settings = ProviderSettings(kind="openai", model="gpt-4o-mini", base_url=f"{base}/v1")
        provider = OpenAICompatProvider("katan", settings)
        router = Router(
            {"katan": provider},
            {"cheap": ["katan"]},
            policies={"katan": GuardPolicy.from_settings(settings)},
        )
        client = openai.OpenAI(api_key="no-key", base_url=f"{base}/v1", max_retries=0)
        request = CompletionRequest(
            messages=(Message("user", "hello"),), phase="review", role="validator", attempt=1
        )
        records: list[CallRecord] = []

        def direct() -> None:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hello"}],
                max_tokens=request.max_tokens,
                temperature=0.0,
            )

        def routed() -> None:
            router.complete("cheap", request, record=records.append)

        for _ in range(20):  # warm both paths up
            direct()
            routed()
        timings: dict[str, list[float]] = {"direct": [], "router": []}
        block = 25
        for _ in range(max(1, calls // block)):
            for label, fn in (("direct", direct), ("router", routed)):
                for _ in range(block):
                    started = time.perf_counter()
                    fn()
                    timings[label].append((time.perf_counter() - started) * 1e6)
    finally:
        server.terminate()
        server.wait(timeout=10)
    direct_us = statistics.median(timings["direct"])
    router_us = statistics.median(timings["router"])
    return {
        "calls_each": len(timings["direct"]),
        "direct_median_us": direct_us,
        "router_median_us": router_us,
        "overhead_us": router_us - direct_us,
        "overhead_pct": (router_us - direct_us) / direct_us * 100,
    }


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args(argv)

    rows = cost_rows()
    print(f"{'model set':<10} {'routed/ticket':>14} {'all-top/ticket':>15} {'saving':>7}  models")
    for row in rows:
        saving = "n/a" if row["saving"] is None else f"{row['saving']:.0%}"
        models = ", ".join(f"{t}={m}" for t, m in row["models"].items())
        print(
            f"{row['model_set']:<10} {_usd(row['routed_usd']):>14} "
            f"{_usd(row['all_top_usd']):>15} {saving:>7}  {models}"
        )
    result: dict[str, Any] = {"cost": rows}
    if not args.skip_overhead:
        measured = overhead(args.calls)
        result["overhead"] = measured
        print(
            f"\nrouter overhead per call ({measured['calls_each']} calls each, loopback "
            f"llm-katan): direct {measured['direct_median_us']:.0f} µs, router "
            f"{measured['router_median_us']:.0f} µs, overhead {measured['overhead_us']:.0f} µs "
            f"({measured['overhead_pct']:.1f}%)"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
