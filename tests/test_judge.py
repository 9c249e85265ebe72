"""The judge: CI commands run with a timeout in their own process group; logs are excerpted."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shipline.errors import ShiplineError
from shipline.judge import failure_excerpt, run_judge
from shipline.judge.excerpt import parse_pytest_log
from shipline.process import run_argv, run_command


def _alive(pid: int) -> bool:
    """True while `pid` runs; a zombie waiting for its reaper counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_dead(pid: int, within_s: float = 2.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return not _alive(pid)


# --- runner -----------------------------------------------------------------------------------


def test_exit_code_duration_and_merged_log_are_recorded(tmp_path: Path) -> None:
    result = run_judge("echo to-stdout; echo to-stderr >&2; exit 3", tmp_path, timeout_s=10)
    assert result.exit_code == 3
    assert not result.timed_out
    assert not result.ok
    assert "to-stdout" in result.log
    assert "to-stderr" in result.log
    assert 0 < result.duration_s < 5


def test_green_command_runs_in_the_given_directory_with_the_given_env(tmp_path: Path) -> None:
    env = {**os.environ, "SHIPLINE_PROBE": "probe-value"}
    result = run_judge('pwd; echo "$SHIPLINE_PROBE"', tmp_path, timeout_s=10, env=env)
    assert result.ok
    assert result.log.split() == [str(tmp_path), "probe-value"]


def test_hanging_judge_is_killed_with_its_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    command = f"sleep 1000 & echo $! > {pidfile}; echo started; sleep 1000"
    started = time.monotonic()
    result = run_judge(command, tmp_path, timeout_s=0.5)
    elapsed = time.monotonic() - started
    assert result.timed_out
    assert not result.ok
    assert elapsed < 4.0, "the judge must not wait for the hanging command"
    assert "started" in result.log
    assert "killed after the 0.5 s timeout" in result.log
    grandchild = int(pidfile.read_text())
    assert _wait_dead(grandchild), "the background grandchild outlived the timeout"


def test_an_argv_keeps_stdout_and_stderr_apart_and_reads_its_input(tmp_path: Path) -> None:
    script = "import sys; print(sys.stdin.read().upper()); print('warn', file=sys.stderr)"
    done = run_argv([sys.executable, "-c", script], tmp_path, 30, input="body $HOME `x`")
    assert (done.returncode, done.timed_out) == (0, False)
    assert done.stdout == "BODY $HOME `X`\n"  # no shell in between
    assert done.stderr == "warn\n"


def test_an_argv_past_its_timeout_is_killed_with_its_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    started = time.monotonic()
    done = run_argv(
        ["sh", "-c", f"sleep 1000 & echo $! > {pidfile}; echo started; sleep 1000"],
        tmp_path,
        0.5,
    )
    assert done.timed_out
    assert time.monotonic() - started < 4.0
    assert done.stdout == "started\n"  # what it printed before it was killed
    assert _wait_dead(int(pidfile.read_text())), "the grandchild outlived the timeout"


def test_command_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_command(
        "trap '' TERM; echo stubborn; while :; do sleep 0.05; done",
        tmp_path,
        timeout_s=0.3,
        kill_grace_s=0.3,
    )
    assert result.timed_out
    assert result.exit_code == -9
    assert time.monotonic() - started < 3.0


def test_background_grandchild_does_not_outlive_a_finished_judge(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    started = time.monotonic()
    result = run_judge(f"sleep 1000 & echo $! > {pidfile}; echo done", tmp_path, timeout_s=30)
    assert result.ok
    assert "done" in result.log
    assert time.monotonic() - started < 5.0, "the open pipe of the grandchild blocked the judge"
    assert _wait_dead(int(pidfile.read_text()))


def test_huge_log_keeps_head_and_tail_in_bounded_memory_and_full_log_on_disk(
    tmp_path: Path,
) -> None:
    script = tmp_path / "noisy.py"
    script.write_text(
        "for i in range(200_000):\n    print(f'line {i:06d} ' + 'x' * 20)\nprint('THE END')\n"
    )
    log_path = tmp_path / "judge.log"
    result = run_judge(
        f"{sys.executable} {script}",
        tmp_path,
        timeout_s=30,
        max_log_chars=10_000,
        log_path=log_path,
    )
    assert result.ok
    assert len(result.log) < 10_200
    assert result.log.startswith("line 000000 ")
    assert result.log.rstrip().endswith("THE END")
    assert f"[shipline: {result.omitted_bytes} bytes of log omitted here]" in result.log
    full = log_path.read_text()
    assert len(full) > 5_000_000
    assert result.omitted_bytes + 10_000 == len(full.encode())


def test_missing_working_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ShiplineError, match="does not exist"):
        run_judge("true", tmp_path / "nope", timeout_s=1)
    with pytest.raises(ShiplineError, match="empty"):
        run_judge("  ", tmp_path, timeout_s=1)


# --- excerpts of real pytest output -----------------------------------------------------------

_SUITE = {
    "calc.py": "def double(x):\n    return x * 3\n",
    "test_calc.py": textwrap.dedent(
        """
        import warnings
        import pytest
        from calc import double

        @pytest.mark.parametrize("n", range(60))
        def test_many_passing(n):
            assert n >= 0

        def test_double_doubles():
            assert double(2) == 4, "double must double"

        def test_dicts_match():
            assert {"a": 1, "b": 2} == {"a": 1, "b": 3}

        def test_noisy_warning_then_key_error():
            warnings.warn("deprecated thing", DeprecationWarning)
            print("captured chatter")
            def inner():
                raise KeyError("missing-key")
            inner()
        """
    ),
    "test_broken_import.py": (
        "from calc import triple\n\ndef test_triple():\n    assert triple(1) == 3\n"
    ),
}


@pytest.fixture(scope="module")
def pytest_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Real pytest output: a red run, and a quiet run that also has a collection error."""
    root = tmp_path_factory.mktemp("suite")
    for name, text in _SUITE.items():
        (root / name).write_text(text)
    base = f"{sys.executable} -m pytest -p no:cacheprovider"
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    commands = {
        "red": f"{base} test_calc.py",
        "quiet": f"{base} -q --continue-on-collection-errors test_calc.py test_broken_import.py",
    }
    with ThreadPoolExecutor(2) as pool:  # pytest takes a second or two to start
        futures = {k: pool.submit(run_judge, c, root, 60, env) for k, c in commands.items()}
        results = {k: f.result() for k, f in futures.items()}
    assert results["red"].exit_code == 1, results["red"].log
    assert results["quiet"].exit_code == 1, results["quiet"].log
    return {k: r.log for k, r in results.items()}


@pytest.mark.parametrize("which", ["red", "quiet"])
def test_excerpt_names_failed_tests_messages_and_summary(
    pytest_logs: dict[str, str], which: str
) -> None:
    excerpt = failure_excerpt(pytest_logs[which], 4000)
    assert "3 failed, 60 passed" in excerpt
    for name in ("test_double_doubles", "test_dicts_match", "test_noisy_warning_then_key_error"):
        assert name in excerpt
    assert "AssertionError: double must double" in excerpt
    assert "assert 6 == 4" in excerpt
    assert "{'b': 2} != {'b': 3}" in excerpt
    # the last traceback, in full: the frames and the exception
    assert 'raise KeyError("missing-key")' in excerpt
    assert "E       KeyError: 'missing-key'" in excerpt


@pytest.mark.parametrize("which", ["red", "quiet"])
def test_excerpt_drops_the_noise(pytest_logs: dict[str, str], which: str) -> None:
    log = pytest_logs[which]
    excerpt = failure_excerpt(log, 4000)
    assert "warnings summary" in log  # the noise is in the log …
    assert "warnings summary" not in excerpt  # … and not in the excerpt
    assert "test_many_passing" not in excerpt
    assert "...................." not in excerpt
    assert "collected" not in excerpt
    assert "platform linux" not in excerpt
    assert len(excerpt) < len(log)


@pytest.mark.parametrize("budget", [150, 400, 900, 2500])
def test_excerpt_never_exceeds_the_budget_and_keeps_the_essentials_first(
    pytest_logs: dict[str, str], budget: int
) -> None:
    excerpt = failure_excerpt(pytest_logs["red"], budget)
    assert len(excerpt) <= budget
    assert excerpt.startswith("pytest summary: 3 failed, 60 passed")
    if budget >= 400:
        assert "test_double_doubles" in excerpt
        assert "KeyError: 'missing-key'" in excerpt  # the end of the last traceback
    if len(failure_excerpt(pytest_logs["red"], 1_000_000)) > budget:
        assert "left out (budget)" in excerpt  # the cut is said, not silent


def test_collection_error_is_excerpted_and_recognised(pytest_logs: dict[str, str]) -> None:
    log = pytest_logs["quiet"]
    parsed = parse_pytest_log(log)
    assert [b.title for b in parsed.collection_errors] == ["ERROR collecting test_broken_import.py"]
    assert parsed.collection_errors[0].exception_type == "ImportError"
    assert parsed.errors == ["test_broken_import.py"]
    excerpt = failure_excerpt(log, 3000)
    assert "ERROR test_broken_import.py" in excerpt
    assert "cannot import name 'triple' from 'calc'" in excerpt


def test_interrupted_collection_is_reported() -> None:
    log = textwrap.dedent(
        """\
        ==================================== ERRORS ====================================
        _______________________ ERROR collecting tests/test_b.py _______________________
        tests/test_b.py:1: in <module>
            from mypkg import thing
        E   ModuleNotFoundError: No module named 'mypkg'
        =========================== short test summary info ============================
        ERROR tests/test_b.py
        !!!!!!!!!!!!!!!!!!!! Interrupted: 1 error during collection !!!!!!!!!!!!!!!!!!!!
        =============================== 1 error in 0.17s ===============================
        """
    )
    parsed = parse_pytest_log(log)
    assert parsed.interrupted == "Interrupted: 1 error during collection"
    assert parsed.collection_errors[0].exception_type == "ModuleNotFoundError"
    excerpt = failure_excerpt(log, 1000)
    assert excerpt.startswith("pytest summary: 1 error in 0.17s")
    assert "No module named 'mypkg'" in excerpt


def test_parse_pytest_log_gives_failed_ids_and_exception_types(
    pytest_logs: dict[str, str],
) -> None:
    parsed = parse_pytest_log(pytest_logs["red"])
    assert parsed.failed == [
        "test_calc.py::test_double_doubles",
        "test_calc.py::test_dicts_match",
        "test_calc.py::test_noisy_warning_then_key_error",
    ]
    assert [b.exception_type for b in parsed.blocks] == [
        "AssertionError",
        "AssertionError",
        "KeyError",
    ]
    assert parsed.collection_errors == []


def test_generic_log_keeps_error_lines_last_traceback_and_tail() -> None:
    noise = [f"compiling module {i}" for i in range(500)]
    log = "\n".join(
        [
            *noise[:200],
            "warning: something harmless",
            "ERROR: lint failed in src/app.py:3",
            *noise[200:],
            "Traceback (most recent call last):",
            '  File "build.py", line 9, in <module>',
            "    main()",
            "RuntimeError: generator crashed",
            *noise[:30],
            "make: *** [check] Error 1",
        ]
    )
    excerpt = failure_excerpt(log, 1500)
    assert len(excerpt) <= 1500
    assert "ERROR: lint failed in src/app.py:3" in excerpt
    assert "RuntimeError: generator crashed" in excerpt
    assert excerpt.rstrip().endswith("make: *** [check] Error 1")
    assert "compiling module 100" not in excerpt


def test_green_pytest_log_excerpt_is_its_summary() -> None:
    log = "....\n4 passed in 0.12s\n"
    assert failure_excerpt(log, 500) == "pytest summary: 4 passed in 0.12s"
    assert failure_excerpt(log, 0) == ""
