"""A second small repository, not the demo's: `ledger`, a money-and-accounts package.

The end-to-end scenarios of the code path on real repositories run here (issue 9): it has
more than one module, tests near the code, pytest configured in pyproject.toml, and a
JavaScript and a Go file, so the repository map has more than Python to read. It carries one
real bug (`Account.withdraw` allows an overdraft) for hotfix tickets, and room for features
(`ledger.money.format_cents` has no currency symbol option).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from conftest import SCRIPTED_TOML, Project, git
from test_workspaces_e2e import JUDGE_TOML

FILES: dict[str, str] = {
    "README.md": """
        # ledger

        Money amounts in integer cents, and accounts that hold them.
        """,
    "pyproject.toml": """
        [project]
        name = "ledger"
        version = "0.3.0"

        [tool.pytest.ini_options]
        testpaths = ["tests"]
        """,
    "ledger/__init__.py": """
        from ledger.accounts import Account, InsufficientFunds
        from ledger.money import format_cents, parse_amount

        __all__ = ["Account", "InsufficientFunds", "format_cents", "parse_amount"]
        """,
    "ledger/money.py": '''
        """Amounts are integer cents; text is "12.34"."""


        def parse_amount(text: str) -> int:
            """'12.34' -> 1234. Raises ValueError on anything else."""
            whole, _, frac = text.strip().partition(".")
            if not whole.isdigit() or (frac and (not frac.isdigit() or len(frac) > 2)):
                raise ValueError(f"not an amount: {text!r}")
            return int(whole) * 100 + int(frac.ljust(2, "0") or 0)


        def format_cents(cents: int) -> str:
            """1234 -> '12.34'."""
            sign = "-" if cents < 0 else ""
            cents = abs(cents)
            return f"{sign}{cents // 100}.{cents % 100:02d}"
        ''',
    "ledger/accounts.py": '''
        """An account holds a balance in cents."""

        from ledger.money import format_cents


        class InsufficientFunds(Exception):
            pass


        class Account:
            def __init__(self, owner: str, balance: int = 0) -> None:
                self.owner = owner
                self.balance = balance

            def deposit(self, cents: int) -> None:
                if cents <= 0:
                    raise ValueError("a deposit must be positive")
                self.balance += cents

            def withdraw(self, cents: int) -> None:
                if cents <= 0:
                    raise ValueError("a withdrawal must be positive")
                self.balance -= cents

            def statement(self) -> str:
                return f"{self.owner}: {format_cents(self.balance)}"
        ''',
    "ledger/report.py": '''
        """A summary over many accounts."""

        from ledger.accounts import Account
        from ledger.money import format_cents


        def total(accounts: list[Account]) -> int:
            return sum(account.balance for account in accounts)


        def summary(accounts: list[Account]) -> str:
            lines = [account.statement() for account in accounts]
            lines.append(f"total: {format_cents(total(accounts))}")
            return "\\n".join(lines)
        ''',
    "tests/test_money.py": """
        import pytest

        from ledger.money import format_cents, parse_amount


        def test_parse_amount_reads_cents():
            assert parse_amount("12.34") == 1234
            assert parse_amount("7") == 700


        def test_parse_amount_refuses_garbage():
            with pytest.raises(ValueError):
                parse_amount("12.345")


        def test_format_cents_pads_and_signs():
            assert format_cents(5) == "0.05"
            assert format_cents(-1234) == "-12.34"
        """,
    "tests/test_accounts.py": """
        import pytest

        from ledger.accounts import Account


        def test_deposit_adds_to_the_balance():
            account = Account("ada")
            account.deposit(500)
            assert account.balance == 500


        def test_deposit_must_be_positive():
            with pytest.raises(ValueError):
                Account("ada").deposit(0)


        def test_statement_names_the_owner_and_balance():
            assert Account("ada", 1234).statement() == "ada: 12.34"
        """,
    "web/format.js": """
        // Formats cents for the web page, like ledger.money.format_cents.
        export function formatCents(cents) {
          const sign = cents < 0 ? "-" : "";
          const abs = Math.abs(cents);
          return `${sign}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
        }

        export class Ticker {
          constructor(cents) { this.cents = cents; }
          render() { return formatCents(this.cents); }
        }
        """,
    "tools/audit.go": """
        package main

        import "fmt"

        // Balance is an account balance in cents.
        type Balance struct {
        \tOwner string
        \tCents int64
        }

        // Overdrawn reports whether the balance is below zero.
        func (b Balance) Overdrawn() bool { return b.Cents < 0 }

        func main() {
        \tfmt.Println(Balance{Owner: "ada", Cents: -5}.Overdrawn())
        }
        """,
}

# A hotfix the repository needs: withdrawing more than the balance must raise.
OVERDRAFT_HOTFIX = {
    "kind": "hotfix",
    "title": "Account.withdraw allows an overdraft",
    "body": (
        "Account('ada', 100).withdraw(500) leaves a balance of -400. It must raise "
        "ledger.accounts.InsufficientFunds and leave the balance unchanged.\n\n"
        "Traceback (most recent call last):\n"
        '  File "ledger/report.py", line 9, in total\n'
        '  File "ledger/accounts.py", line 24, in withdraw\n'
    ),
}


def write_ledger_repo(root: Path) -> None:
    """Write the ledger package's files under `root` (no git)."""
    for path, text in FILES.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def ledger_project(
    root: Path,
    extra_toml: str = "",
    rules: list[dict[str, Any]] | None = None,
    db_url: str | None = None,
    judge: bool = True,
) -> Project:
    """The ledger repository under git on branch main, on a scripted provider reading
    `rules`, with pytest as the judge unless `judge` is False."""
    root.mkdir(parents=True, exist_ok=True)
    write_ledger_repo(root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "ledger 0.3.0")
    toml = SCRIPTED_TOML + (JUDGE_TOML if judge else "") + extra_toml
    (root / "shipline.toml").write_text(toml, encoding="utf-8")
    project = Project(root, db_url)
    project.write_script(rules or [])
    project.cli("init")
    return project
