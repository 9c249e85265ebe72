"""Repository context: what a phase sees of the code, within its token budget.

- tags.py: tree-sitter tags of one file (top-level symbols with signatures, references);
- cache.py: those tags cached by git blob sha under `.shipline/context/`;
- rank.py: files ranked by a personalised PageRank toward what the ticket mentions;
- repository.py: the candidates a phase declares (phases/base.py `RepoContext`), read
  through git from the target branch or the ticket's worktree;
- fit.py: the candidates cut into the phase's share of its token budget, with a record of
  what was shown and what was cut.

Import the modules themselves: this package's import loads nothing, and tree-sitter is
loaded when the first file is parsed (the CLI starts without either).
"""
