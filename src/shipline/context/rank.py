"""Rank a repository's files by relevance to a ticket: a personalised PageRank over references.

The graph is Aider's repo map graph. Each file is a node. A file that references a name
another file defines gets an edge to it, weighted by the square root of how often it refers
to it, times 10 when the ticket or a deliverable mentions the name, times 0.1 for a private
name (`_x`) or a name defined in more than five files; a name defined in more than
`GENERIC_DEFINERS` files (`get`, `run`) adds no edge at all. The random walk restarts at the
files the text mentions (by path, or by defining a name it mentions), else anywhere.

The PageRank is a short power iteration (damping 0.85, until the ranks move less than 1e-6
per node): networkx would add a tenth of a second of import to every worker for one call.
Everything here is pure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from .tags import FileTags

DAMPING = 0.85
TOLERANCE = 1e-6
MAX_ITERATIONS = 100
GENERIC_DEFINERS = 20

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATHISH = re.compile(r"[\w./\\-]*\w\.\w+|[\w-]+(?:/[\w.-]+)+")


def mentioned_names(text: str, defined: Iterable[str]) -> set[str]:
    """The defined names that `text` mentions as words (`withdraw`, `Account.withdraw`)."""
    return set(_WORD.findall(text)) & set(defined)


def named_paths(text: str, paths: Iterable[str]) -> list[str]:
    """The repository files `text` names, in the order it names them: a path as written, an
    absolute or longer path that ends with one (`/home/ci/app/ledger/accounts.py:24`), or a
    dotted module (`ledger.accounts` → ledger/accounts.py). A bare file name counts only
    when it names one file of the repository."""
    known = list(paths)
    exact = set(known)
    by_name: dict[str, list[str]] = {}
    for path in known:
        by_name.setdefault(path.rpartition("/")[2], []).append(path)
    found: dict[str, None] = {}
    for raw in _PATHISH.findall(text):
        token = raw.replace("\\", "/").lstrip("/").removeprefix("./")
        if not token:
            continue
        for hit in _resolve(token, exact, known, by_name):
            found.setdefault(hit, None)
    return list(found)


def _resolve(
    token: str, exact: set[str], known: list[str], by_name: Mapping[str, list[str]]
) -> list[str]:
    if token in exact:
        return [token]
    if "/" in token:
        hits = [path for path in known if token.endswith("/" + path)]
        return [max(hits, key=len)] if hits else []
    if token.count(".") >= 1 and "/" not in token:
        parts = token.split(".")
        for end in range(len(parts), 0, -1):  # ledger.accounts.InsufficientFunds
            base = "/".join(parts[:end])
            for candidate in (f"{base}.py", f"{base}/__init__.py"):
                if candidate in exact and end > 1:
                    return [candidate]
    same = by_name.get(token, [])
    return same if len(same) == 1 else []


def rank_files(
    tags: Mapping[str, FileTags],
    mentioned_files: Iterable[str] = (),
    mentioned_idents: Iterable[str] = (),
) -> list[tuple[str, float]]:
    """Every file of `tags`, most relevant first, with its rank (the ranks sum to 1)."""
    nodes = sorted(tags)
    if not nodes:
        return []
    idents = set(mentioned_idents)
    definers: dict[str, list[str]] = {}
    for path in nodes:
        for name in tags[path].names:
            definers.setdefault(name, []).append(path)
    edges: dict[str, dict[str, float]] = {}
    factors: dict[str, float] = {}  # a name's multiplier, worked out once
    for source in nodes:
        out: dict[str, float] = {}
        for name, count in tags[source].refs.items():
            targets = definers.get(name)
            if targets is None:
                continue
            factor = factors.get(name)
            if factor is None:
                generic = len(targets) > GENERIC_DEFINERS
                factor = 0.0 if generic else _multiplier(name, idents, len(targets))
                factors[name] = factor
            if not factor:
                continue
            weight = factor * math.sqrt(count)
            for target in targets:
                if target != source:
                    out[target] = out.get(target, 0.0) + weight
        if out:
            edges[source] = out
    restart = _restart(nodes, set(mentioned_files), idents, definers)
    ranks = pagerank(nodes, edges, restart)
    return sorted(ranks.items(), key=lambda item: (-item[1], item[0]))


def _multiplier(name: str, mentioned: set[str], definer_count: int) -> float:
    weight = 1.0
    if name in mentioned:
        weight *= 10
    if name.startswith("_"):
        weight *= 0.1
    if definer_count > 5:
        weight *= 0.1
    return weight


def _restart(
    nodes: list[str], files: set[str], idents: set[str], definers: Mapping[str, list[str]]
) -> dict[str, float]:
    """Where the walk restarts: the mentioned files, and the definers of mentioned names."""
    weights: dict[str, float] = dict.fromkeys(nodes, 0.0)
    for path in files:
        if path in weights:
            weights[path] += 1.0
    for name in idents:
        targets = definers.get(name, [])
        for path in targets:
            weights[path] += 1.0 / len(targets)
    total = sum(weights.values())
    if total == 0:
        return {node: 1.0 / len(nodes) for node in nodes}
    return {node: weight / total for node, weight in weights.items()}


def pagerank(
    nodes: list[str], edges: Mapping[str, Mapping[str, float]], restart: Mapping[str, float]
) -> dict[str, float]:
    """Personalised PageRank by power iteration. `edges[a][b]` is the weight of a → b;
    a node without out-edges (dangling) gives its rank back through `restart`."""
    out_weight = {node: sum(edges.get(node, {}).values()) for node in nodes}
    rank = dict(restart)
    for _ in range(MAX_ITERATIONS):
        dangling = sum(rank[node] for node in nodes if out_weight[node] == 0)
        new = {node: (1 - DAMPING + DAMPING * dangling) * restart[node] for node in nodes}
        for source, targets in edges.items():
            total = out_weight[source]
            if total == 0:
                continue
            share = DAMPING * rank[source] / total
            for target, weight in targets.items():
                new[target] += share * weight
        moved = sum(abs(new[node] - rank[node]) for node in nodes)
        rank = new
        if moved < len(nodes) * TOLERANCE:
            break
    return rank
