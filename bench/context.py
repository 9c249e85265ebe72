"""Benchmark: the repository map on a large repository, and what each phase's prompt costs.

Generates a repository of `--files` source files (default 3,000: Python 60%, JavaScript and
TypeScript 25%, Go 15%; 40 to 600 lines each, functions and classes that call into other
modules), commits it, then measures, `--runs` times interleaved (cold, cached, warm, cold,
…), medians reported:

- cold: the map of the whole repository with an empty tags cache (`git ls-tree`, every blob
  read with `git cat-file --batch`, parsed by tree-sitter, ranked, the cache written);
- cached: the same with the cache file the cold build wrote, and nothing in memory (what a
  new worker process pays: ls-tree, the cache file read, ranking);
- warm: the same again in the same process (a worker's next prompt: the tags are in memory);
- import: `import tree_sitter` and the four grammars, in a fresh interpreter (what the first
  map of a worker process pays once).

Then, per phase that declares repository context, the prompt the engine builds
(`engine/prompt.py build_prompt` with the default budget of 3,000 tokens, or `--budget`,
and `[context] share = 0.5`) for a ticket about one module of the repository, against a
"whole repository" baseline: the same prompt with every source file pasted in (what a
context without a budget would send). Tokens are the engine's estimate (4 characters a
token).

The 1-minute load average is read before and after (`os.getloadavg`); a loaded machine
slows the times, not the token counts. JSON goes to bench/results/context.json.

    python bench/context.py [--files 3000] [--runs 5] [--budget 3000] [--seed 7] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from shipline.context.cache import TagCache, forget
from shipline.context.fit import Candidates
from shipline.context.repository import Revision, gather, mapped
from shipline.engine.loop import TicketView
from shipline.engine.prompt import build_prompt
from shipline.phases import get_phase
from shipline.providers.base import estimate_tokens
from shipline.workspaces.git import Git

GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}
BUDGET = 3000
SHARE = 0.5
PHASES = ("discovery", "techspec", "plan", "diagnose", "tests", "implement", "fix-ci")

# -- the generated repository --------------------------------------------------------------


def _python(rng: random.Random, name: str, others: list[tuple[str, str]]) -> str:
    lines = [f'"""{name}: generated module."""', ""]
    deps = rng.sample(others, min(3, len(others)))
    for module, function in deps:
        lines.append(f"from {module} import {function}")
    lines += ["", f"LIMIT_{name.upper()} = {rng.randint(1, 99)}", ""]
    for c in range(rng.randint(0, 3)):
        lines += ["", f"class {name.title().replace('_', '')}{c}:"]
        lines += ["    def __init__(self, value: int = 0) -> None:", "        self.value = value"]
        for k in range(rng.randint(2, 8)):
            dep = rng.choice(deps)[1] if deps else "abs"
            lines += [
                "",
                f"    def step_{c}_{k}(self, amount: int, *, scale: float = 1.0) -> int:",
                f'        """Step {k} of {name}."""',
                f"        total = {dep}(amount) + self.value",
                "        for _ in range(3):",
                "            total = int(total * scale) + 1",
                "        return total",
            ]
    for k in range(rng.randint(2, 14)):
        dep = rng.choice(deps)[1] if deps else "abs"
        body = [f"    value = {dep}(a) + b"]
        body += [f"    value += {rng.randint(1, 9)} * b" for _ in range(rng.randint(1, 25))]
        lines += [
            "",
            "",
            f"def {name}_op_{k}(a: int, b: int = 2) -> int:",
            *body,
            "    return value",
        ]
    return "\n".join(lines) + "\n"


def _javascript(rng: random.Random, name: str, typed: bool) -> str:
    t = (lambda s: s) if typed else (lambda s: "")
    lines = [f"// {name}: generated module."]
    if typed:
        lines += [f"export interface {name.title()}Options {{ scale: number; label: string; }}"]
    for k in range(rng.randint(2, 12)):
        lines += [
            f"export function {name}Fmt{k}(a{t(': number')}, b{t(': number')}){t(': string')} {{"
        ]
        lines += [f"  const v = a * {rng.randint(1, 9)} + b;" for _ in range(rng.randint(1, 20))]
        lines += ["  return String(v);", "}", ""]
    lines += [
        f"export class {name.title()}Widget {{",
        "  constructor(value) { this.value = value; }",
    ]
    for k in range(rng.randint(1, 6)):
        lines += [f"  render{k}() {{ return {name}Fmt0(this.value, {k}); }}"]
    lines += ["}", ""]
    return "\n".join(lines)


def _go(rng: random.Random, name: str) -> str:
    lines = [f"package {name}", "", 'import "fmt"', ""]
    lines += [f"// Store{name.title()} holds values.", f"type Store{name.title()} struct {{"]
    lines += ["\tValues []int64", "\tLabel  string", "}", ""]
    for k in range(rng.randint(2, 10)):
        lines += [f"func (s *Store{name.title()}) Add{k}(v int64) int64 {{"]
        lines += [
            f"\ts.Values = append(s.Values, v*{rng.randint(1, 9)})"
            for _ in range(rng.randint(1, 15))
        ]
        lines += ["\treturn int64(len(s.Values))", "}", ""]
    lines += [f"func Describe{name.title()}(s Store{name.title()}) string {{"]
    lines += ['\treturn fmt.Sprintf("%s: %d", s.Label, len(s.Values))', "}", ""]
    return "\n".join(lines)


def generate(root: Path, files: int, seed: int) -> dict[str, Any]:
    """Write and commit the repository; what it holds."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    python_count = int(files * 0.60)
    js_count = int(files * 0.25)
    go_count = files - python_count - js_count
    modules: list[tuple[str, str]] = []  # (dotted module, one function) for imports
    written: dict[str, str] = {}
    for n in range(python_count):
        package = f"pkg{n // 40}"
        name = f"mod{n}"
        # every seventh file tests the module before it
        path = f"src/{package}/{name}.py" if n % 7 else f"tests/{package}/test_mod{n - 1}.py"
        written[path] = _python(rng, name, modules[-200:])
        if n % 7:
            modules.append((f"{package}.{name}", f"{name}_op_0"))
    for n in range(js_count):
        typed = n % 3 == 0
        written[f"web/part{n // 30}/view{n}.{'ts' if typed else 'js'}"] = _javascript(
            rng, f"view{n}", typed
        )
    for n in range(go_count):
        written[f"services/svc{n // 20}/store{n}.go"] = _go(rng, f"store{n}")
    written["README.md"] = "# generated\n"
    for path, text in written.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "gen"]):
        subprocess.run(["git", *args], cwd=root, env=GIT_ENV, check=True)
    sizes = [len(text) for text in written.values()]
    return {
        "files": len(written),
        "bytes": sum(sizes),
        "lines": sum(text.count("\n") for text in written.values()),
        "python": python_count,
        "javascript_typescript": js_count,
        "go": go_count,
        "median_lines": statistics.median(t.count("\n") for t in written.values()),
    }


# -- timing ----------------------------------------------------------------------------------


def build(root: Path, cache_path: Path, ticket: str) -> tuple[float, Candidates, TagCache]:
    cache = TagCache(cache_path)
    started = time.perf_counter()
    found = gather("map", Git(root), [Revision("main", "main")], cache, ticket, {})
    return time.perf_counter() - started, found, cache


def import_seconds() -> float:
    code = (
        "import time; t = time.perf_counter(); import tree_sitter, tree_sitter_python, "
        "tree_sitter_javascript, tree_sitter_typescript, tree_sitter_go; "
        "print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout)


# -- prompts per phase -----------------------------------------------------------------------


def phase_inputs(target: str, other: str) -> dict[str, dict[str, str]]:
    """A feature's deliverables so far, at each phase, about `target` and its caller."""
    spec = (
        "## Summary\nFix the rounding.\n\n## Requirements\n- **R1**: rounds half up.\n"
        "  - Acceptance: 2.5 → 3.\n"
    )
    design = f"## Components\n- **D1** (R1): in {target}, `mod6_op_1` rounds half up.\n"
    plan = (
        "## Steps\n1. D1: change the rounding.\n\n## Files\n"
        f"- {target}: the rounding\n- {other}: its caller\n\n"
        "## Test matrix\n| requirement | case |\n|---|---|\n| R1 | success |\n"
    )
    tests = (
        "### File: tests/test_rounding.py\n```python\nfrom pkg0.mod6 import mod6_op_1\n\n\n"
        "def test_r1():\n    assert mod6_op_1(1) == 3\n```\n"
    )
    log = (
        f'Traceback (most recent call last):\n  File "{target}", line 9, in mod6_op_1\n'
        "AssertionError\n"
    )
    implementation = f"### File: {target}\n```python\n# fixed\n```\n"
    return {
        "discovery": {},
        "techspec": {"spec.md": spec},
        "plan": {"spec.md": spec, "design.md": design},
        "diagnose": {},
        "tests": {"spec.md": spec, "plan.md": plan},
        "implement": {"plan.md": plan, "tests.md": tests},
        "fix-ci": {"tests.md": tests, "implementation.md": implementation, "ci.log": log},
    }


def phase_prompts(root: Path, cache_path: Path, budget: int) -> list[dict[str, Any]]:
    target, other = "src/pkg0/mod6.py", "src/pkg0/mod5.py"  # tests/pkg0/test_mod6.py tests it
    ticket = TicketView(
        1,
        "feature",
        "mod6_op_1 rounds half down",
        f"`mod6_op_1` in {target} returns 2 for 2.5.\n"
        f'Traceback (most recent call last):\n  File "{other}", line 4, in mod5_op_0\n'
        f'  File "{target}", line 9, in mod6_op_1\n',
        2,
        False,
    )
    git = Git(root)
    entries = git.tree("main")
    everything = git.blobs([e.sha for e in entries if mapped(e.path, e.size)])
    whole_repo = "\n".join(
        f'<source path="{e.path}">\n{everything[e.sha].decode()}</source>'
        for e in entries
        if e.sha in everything
    )
    rows = []
    for name, inputs in phase_inputs(target, other).items():
        phase = get_phase(name)
        variables = {
            "ticket": ticket,
            "inputs": inputs,
            "history": [],
            "note": None,
            "deliverable": phase.deliverable,
            "phase": phase,
            "session": False,
        }

        def candidates(phase_kind: Any = phase.context, given: Any = inputs) -> Candidates:
            return gather(
                phase_kind,
                git,
                [Revision("main", "main")],
                TagCache(cache_path),
                f"{ticket.title}\n{ticket.body}",
                given,
            )

        started = time.perf_counter()
        prompt = build_prompt(phase, variables, budget, candidates, int(budget * SHARE))
        seconds = time.perf_counter() - started
        bare = build_prompt(phase, variables, 10**9)
        record = prompt.context or {}
        rows.append(
            {
                "phase": name,
                "context": phase.context,
                "prompt_tokens": prompt.tokens,
                "without_context_tokens": bare.tokens,
                "context_tokens": record.get("tokens", 0),
                "map_files": record.get("map", {}).get("files", 0),
                "map_symbols": record.get("map", {}).get("symbols", 0),
                "files": [f"{f['path']} ({f['mode']})" for f in record.get("files", [])],
                "cut": record.get("cut", []),
                "whole_repo_tokens": bare.tokens + estimate_tokens(whole_repo),
                "seconds": round(seconds, 4),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--budget", type=int, default=BUDGET, help="input_token_budget")
    parser.add_argument("--out", type=Path, default=Path("bench/results/context.json"))
    args = parser.parse_args()
    console = Console(width=170)
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="shipline-context-bench-"))
    try:
        repo = work / "repo"
        started = time.perf_counter()
        shape = generate(repo, args.files, args.seed)
        console.print(
            f"generated {shape['files']} files, {shape['lines']:,} lines, "
            f"{shape['bytes'] / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s"
        )
        cache_path = work / "tags.json"
        ticket = "mod6_op_1 in src/pkg0/mod6.py rounds half down"
        cold: list[float] = []
        cached: list[float] = []
        warm: list[float] = []
        found: Candidates | None = None
        for _ in range(args.runs):  # interleaved: the same load for all three
            cache_path.unlink(missing_ok=True)
            forget()
            seconds, found, cache = build(repo, cache_path, ticket)
            cold.append(seconds)
            assert cache.misses > 0 and cache.hits == 0
            forget()
            seconds, _, cache = build(repo, cache_path, ticket)
            cached.append(seconds)
            assert cache.misses == 0, "the second build must read every file from the cache"
            seconds, _, cache = build(repo, cache_path, ticket)
            warm.append(seconds)
        cache_bytes = cache_path.stat().st_size
        imports = [import_seconds() for _ in range(args.runs)]
        assert found is not None
        symbols = sum(len(tags.symbols) for _, tags in found.ranked)
        rows = phase_prompts(repo, cache_path, args.budget)
        load_after = os.getloadavg()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    times = Table(title=f"repository map, {shape['files']} files ({args.runs} runs, medians)")
    for column in ("build", "median s", "min s", "max s"):
        times.add_column(column, justify="right" if column != "build" else "left")
    for label, values in (
        ("cold (empty cache)", cold),
        ("cached (cache file)", cached),
        ("warm (same process)", warm),
        ("import tree-sitter", imports),
    ):
        times.add_row(
            label, f"{statistics.median(values):.3f}", f"{min(values):.3f}", f"{max(values):.3f}"
        )
    console.print(times)
    console.print(
        f"mapped files {len(found.ranked)}, symbols {symbols}, tags cache "
        f"{cache_bytes / 1e6:.1f} MB; load average {load_before:.2f} → {load_after:.2f}"
    )
    prompts = Table(title=f"prompt tokens per phase (budget {args.budget}, context share {SHARE})")
    for column in (
        "phase",
        "context",
        "prompt",
        "without repo",
        "repo context",
        "map files/symbols",
        "files shown",
        "whole repo",
        "× smaller",
    ):
        prompts.add_column(
            column, justify="left" if column in ("phase", "context", "files shown") else "right"
        )
    for row in rows:
        prompts.add_row(
            row["phase"],
            row["context"],
            str(row["prompt_tokens"]),
            str(row["without_context_tokens"]),
            str(row["context_tokens"]),
            f"{row['map_files']}/{row['map_symbols']}",
            ", ".join(row["files"]) or "-",
            f"{row['whole_repo_tokens']:,}",
            f"{row['whole_repo_tokens'] / row['prompt_tokens']:.0f}",
        )
    console.print(prompts)
    result = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_1min_before": load_before,
            "load_1min_after": load_after,
        },
        "repository": shape,
        "runs": args.runs,
        "budget": args.budget,
        "share": SHARE,
        "map_seconds": {
            "cold": cold,
            "cached": cached,
            "warm": warm,
            "import": imports,
            "cold_median": statistics.median(cold),
            "cached_median": statistics.median(cached),
            "warm_median": statistics.median(warm),
            "import_median": statistics.median(imports),
        },
        "mapped_files": len(found.ranked),
        "cache_bytes": cache_bytes,
        "symbols": symbols,
        "phases": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    console.print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
