"""Tags of one source file: its top-level symbols (with signatures) and the names it references.

Parsing is tree-sitter's, with the tags queries that the tree-sitter org's language packages
ship (`queries/tags.scm`, exposed as `TAGS_QUERY`): `definition.*` captures are symbols,
`reference.*` captures are references. TypeScript's query only adds to JavaScript's, so a
TypeScript file is queried with both, as tree-sitter's own tagger does. Only what a map
needs is kept: classes, functions, types, interfaces and module constants at the top of a
file, and the methods of those classes; a function inside a function is not a symbol.

tree-sitter is imported on first use, never at import time (the CLI starts without it).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import Any

# Bump when what a file's tags hold changes: the cache (context/cache.py) keys on it.
TAGS_VERSION = 1

LANGUAGES: dict[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
}

# Nodes that open a function body: a definition below one of them is not top-level.
_FUNCTIONS = frozenset(
    {
        "function_definition",
        "lambda",
        "function_declaration",
        "function_expression",
        "generator_function",
        "generator_function_declaration",
        "arrow_function",
        "method_definition",
        "method_declaration",
        "func_literal",
    }
)
_CLASSES = frozenset(
    {
        "class_definition",
        "class_declaration",
        "class",
        "abstract_class_declaration",
        "interface_declaration",
    }
)
_KINDS = {
    "class": "class",
    "function": "function",
    "method": "method",
    "interface": "interface",
    "type": "type",
    "module": "module",
    "constant": "constant",
}
_SPACES = re.compile(r"\s+")
MAX_SIGNATURE = 160


@dataclass(frozen=True)
class Symbol:
    """One definition: `kind` is class, function, method, interface, type, module or constant;
    `parent` is the class (or Go receiver type) a method belongs to."""

    name: str
    kind: str
    line: int  # 1-based
    signature: str
    parent: str | None = None

    def as_json(self) -> list[Any]:
        return [self.name, self.kind, self.line, self.signature, self.parent]

    @classmethod
    def from_json(cls, row: list[Any]) -> Symbol:
        name, kind, line, signature, parent = row
        return cls(str(name), str(kind), int(line), str(signature), parent)


@dataclass(frozen=True)
class FileTags:
    """What the map knows of one file: its symbols in source order, and the names it refers
    to with how often."""

    symbols: tuple[Symbol, ...]
    refs: dict[str, int]
    names: frozenset[str] = field(init=False, compare=False, repr=False)  # the symbols' names

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", frozenset(symbol.name for symbol in self.symbols))

    def as_json(self) -> dict[str, Any]:
        return {"symbols": [s.as_json() for s in self.symbols], "refs": self.refs}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileTags:
        symbols = tuple(Symbol.from_json(row) for row in data["symbols"])
        return cls(symbols, {str(k): int(v) for k, v in data["refs"].items()})


EMPTY = FileTags((), {})


def language_of(path: str) -> str | None:
    """The parser a path needs (python, javascript, typescript, tsx, go), or None."""
    name = path.rpartition("/")[2]
    dot = name.rfind(".")
    return LANGUAGES.get(name[dot:].lower()) if dot > 0 else None


@cache
def _parser_and_query(language: str) -> tuple[Any, Any]:
    """tree-sitter's parser and the tags query for a language, loaded once per process."""
    import tree_sitter as ts

    grammar: Any
    if language == "python":
        import tree_sitter_python as grammar

        raw, query = grammar.language(), grammar.TAGS_QUERY
    elif language == "javascript":
        import tree_sitter_javascript as grammar

        raw, query = grammar.language(), grammar.TAGS_QUERY
    elif language in ("typescript", "tsx"):
        import tree_sitter_javascript as javascript
        import tree_sitter_typescript as grammar

        raw = grammar.language_tsx() if language == "tsx" else grammar.language_typescript()
        query = javascript.TAGS_QUERY + "\n" + grammar.TAGS_QUERY
    elif language == "go":
        import tree_sitter_go as grammar

        raw, query = grammar.language(), grammar.TAGS_QUERY
    else:  # pragma: no cover - language_of only names the languages above
        raise ValueError(f"no parser for {language}")
    lang = ts.Language(raw)
    return ts.Parser(lang), ts.Query(lang, query)


def parse_tags(path: str, source: bytes) -> FileTags:
    """The tags of one file, or EMPTY for a language without a parser."""
    language = language_of(path)
    if language is None:
        return EMPTY
    import tree_sitter as ts

    parser, query = _parser_and_query(language)
    tree = parser.parse(source)
    symbols: dict[tuple[int, int], Symbol] = {}
    refs: Counter[str] = Counter()
    for _, captures in ts.QueryCursor(query).matches(tree.root_node):
        names = captures.get("name")
        if not names:
            continue
        name = _text(names[0])
        for key, nodes in captures.items():
            role, _, kind = key.partition(".")
            if role == "reference":
                refs[name] += 1
            elif role == "definition" and kind in _KINDS:
                symbol = _symbol(nodes[0], name, _KINDS[kind], language)
                if symbol is not None:
                    symbols.setdefault((nodes[0].start_byte, nodes[0].end_byte), symbol)
    ordered = tuple(symbols[key] for key in sorted(symbols))
    return FileTags(ordered, dict(refs))


def _text(node: Any) -> str:
    return bytes(node.text or b"").decode("utf-8", "replace")


def _symbol(node: Any, name: str, kind: str, language: str) -> Symbol | None:
    """The symbol a definition node makes, or None when it is not at the top of its file."""
    parent: str | None = None
    ancestor = node.parent
    while ancestor is not None:
        if ancestor.type in _FUNCTIONS:
            return None
        if ancestor.type in _CLASSES and parent is None:
            found = ancestor.child_by_field_name("name")
            parent = _text(found) if found is not None else None
        ancestor = ancestor.parent
    if node.type == "method_declaration":  # Go: the receiver's type is the parent
        parent = _receiver_type(node)
    if parent is not None and kind == "function":
        kind = "method"
    return Symbol(name, kind, node.start_point[0] + 1, _signature(node, language), parent)


def _receiver_type(node: Any) -> str | None:
    receiver = node.child_by_field_name("receiver")
    if receiver is None:
        return None
    found = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", _text(receiver))
    return found[-1] if found else None


def _signature(node: Any, language: str) -> str:
    """The definition's head: its text up to its body (`def f(x: int) -> str`), one line."""
    body = node.child_by_field_name("body")
    if body is None and (value := node.child_by_field_name("value")) is not None:
        body = value.child_by_field_name("body")
    if node.type == "type_spec":  # Go: `type Balance struct`
        kind = node.child_by_field_name("type")
        shown = kind.type.removesuffix("_type") if kind is not None else ""
        name = node.child_by_field_name("name")
        head = f"type {_text(name) if name is not None else ''} {shown}"
    elif node.type == "assignment" or body is None:
        head = _text(node).split("\n", 1)[0]
    else:
        source = bytes(node.text or b"")
        head = source[: body.start_byte - node.start_byte].decode("utf-8", "replace")
    head = _SPACES.sub(" ", head).strip().rstrip(":{").rstrip()
    if language == "python":
        head = head.rstrip(":")
    if len(head) > MAX_SIGNATURE:
        head = head[: MAX_SIGNATURE - 1].rstrip() + "…"
    return head
