"""A/B benchmark: the engine's per-step overhead of two checkouts of shipline, side by side.

Runs `bench/engine_overhead.py --only shipline,floor` of checkout A and of checkout B
alternately (A, B, A, B, …), each in its own process with its own sources first on the
path, so both see the same machine load over the same minutes. Prints the median µs/step
(wall and CPU) of each, B/A ratios, and the floor (bare SQLite) of each run as a load
gauge; the 1-minute load average before and after is noted. Writes bench/results/ab.json.

    git worktree add --detach /tmp/before main~3   # the revision to compare against
    python bench/ab.py --a /tmp/before --b . [--runs 5] [--tickets 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "ab.json"


def one_run(checkout: Path, tickets: int) -> dict[str, float]:
    """One engine_overhead run of `checkout`: shipline's and the floor's µs/step."""
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        out = Path(tmp) / "run.json"
        env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
        subprocess.run(
            [
                sys.executable,
                str(checkout / "bench" / "engine_overhead.py"),
                "--only",
                "shipline,floor",
                "--tickets",
                str(tickets),
                "--json",
                str(out),
            ],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        rows = {r["engine"]: r for r in json.loads(out.read_text())["results"]}
    ship = rows["shipline"]
    if ship.get("error"):
        raise SystemExit(f"{checkout}: shipline failed: {ship['error']}")
    return {
        "wall_us": ship["per_step_us"],
        "cpu_us": ship["cpu_per_step_us"],
        "floor_us": rows["floor"]["per_step_us"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="checkout A (the baseline)")
    parser.add_argument("--b", type=Path, default=Path("."), help="checkout B (default: .)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each, interleaved (>= 5)")
    parser.add_argument("--tickets", type=int, default=100)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    checkouts = {"A": args.a.resolve(), "B": args.b.resolve()}
    for name, path in checkouts.items():
        if not (path / "bench" / "engine_overhead.py").is_file():
            parser.error(f"checkout {name} ({path}) has no bench/engine_overhead.py")
    load_before = os.getloadavg()[0]
    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for i in range(args.runs):
        for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
            print(f"run {i + 1}/{args.runs} {name}…", file=sys.stderr, flush=True)
            runs[name].append(one_run(checkouts[name], args.tickets))
    load_after = os.getloadavg()[0]

    med = {
        name: {key: statistics.median(r[key] for r in rs) for key in ("wall_us", "cpu_us")}
        for name, rs in runs.items()
    }
    print(f"\nper-step overhead, {args.tickets} tickets x 6 phases, median of {args.runs}")
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after\n")
    print("| checkout | µs/step (wall) | CPU µs/step | floor µs (min-max) |")
    print("|---|---:|---:|---:|")
    for name, rs in runs.items():
        floors = [r["floor_us"] for r in rs]
        print(
            f"| {name} {checkouts[name]} | {med[name]['wall_us']:,.0f} | "
            f"{med[name]['cpu_us']:,.0f} | {min(floors):.0f}-{max(floors):.0f} |"
        )
    wall = med["B"]["wall_us"] / med["A"]["wall_us"]
    cpu = med["B"]["cpu_us"] / med["A"]["cpu_us"]
    print(f"\nB/A: wall {wall:.3f}, CPU {cpu:.3f} (below 1: B is faster)")
    payload = {
        "benchmark": "ab",
        "tickets": args.tickets,
        "runs": runs,
        "median": med,
        "ratio_b_over_a": {"wall": wall, "cpu": cpu},
        "checkouts": {k: str(v) for k, v in checkouts.items()},
        "load_average": {"before": load_before, "after": load_after},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
