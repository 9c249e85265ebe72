"""Benchmark: time and disk to a ready ticket workspace, `git worktree add` against `git clone`.

Builds a large repository locally (default: 20,000 files, 300 commits, packed, with
`git fast-import`), then measures, each `--repeat` times (median reported):

- shipline's `ensure_worktree` (lock, prune, `git worktree add -b`, checkout),
- a bare `git worktree add -b`,
- `git clone --no-local` (objects copied through the pack protocol: what a clone of a
  remote costs at best, without the network),
- a plain local `git clone` (objects hard-linked: cheap on disk, same file system only).

Disk: `du`-style bytes allocated by the new workspace, and the new bytes it really adds
(files hard-linked with the source repository are not counted again).
Prints a table of ratios and writes JSON to bench/results/workspaces.json.

    python bench/workspaces.py [--files 20000] [--commits 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from shipline.workspaces import ensure_worktree, remove_worktree

GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}


def git(cwd: Path, *args: str, stdin: bytes | None = None) -> None:
    subprocess.run(
        ["git", *args], cwd=cwd, input=stdin, check=True, capture_output=True, env=GIT_ENV
    )


def _blob(i: int, rev: int) -> bytes:
    """Source-like text, ~1.5 KiB, different for each file and revision."""
    lines = [f"# module {i} revision {rev}", f"def function_{i}(x):"]
    lines += [f"    value_{k} = x * {k + i} + {rev}  # step {k} of module {i}" for k in range(28)]
    lines.append("    return x")
    return ("\n".join(lines) + "\n").encode()


def build_repo(path: Path, files: int, commits: int) -> None:
    """A packed repository of `files` files over `commits` commits, through fast-import."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    stream = bytearray()
    per_commit = max(files // 4 // max(commits - 1, 1), 1)
    when = 1_700_000_000
    for c in range(commits):
        stream += b"commit refs/heads/main\n"
        stream += b"committer bench <bench@localhost> %d +0000\n" % (when + c * 60)
        message = f"commit {c}".encode()
        stream += b"data %d\n%s\n" % (len(message), message)
        if c == 0:
            changed = range(files)
        else:
            start = (c * per_commit * 7) % files
            changed = range(start, min(start + per_commit, files))
        for i in changed:
            data = _blob(i, c)
            name = f"pkg{i % 50:02d}/sub{i % 7}/module_{i:05d}.py".encode()
            stream += b"M 100644 inline %s\ndata %d\n%s\n" % (name, len(data), data)
    git(path, "fast-import", "--quiet", stdin=bytes(stream))
    git(path, "checkout", "-q", "-f", "main")
    git(path, "gc", "-q", "--aggressive" if files < 2000 else "--quiet")


def disk(path: Path, source: Path | None = None) -> tuple[int, int]:
    """(allocated bytes, new bytes): new bytes leave out files hard-linked to `source`."""
    total = new = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            size = st.st_blocks * 512
            total += size
            shared = (
                source is not None
                and st.st_nlink > 1
                and not os.path.isdir(os.path.join(dirpath, name))
            )
            if not shared:
                new += size
    return total, new


Method = tuple[str, Callable[[int], Path], Callable[[Path], int], Callable[[Path], None]]


@dataclass
class Row:
    method: str
    seconds_all: list[float]
    disk_bytes: int
    new_disk_bytes: int

    @property
    def seconds(self) -> float:
        return statistics.median(self.seconds_all)


def measure(methods: list[Method], repeat: int, source: Path) -> list[Row]:
    """Run the methods round-robin (so machine load drifts alike for all), `repeat` times."""
    times: dict[str, list[float]] = {m[0]: [] for m in methods}
    sizes: dict[str, list[int]] = {m[0]: [] for m in methods}
    news: dict[str, list[int]] = {m[0]: [] for m in methods}
    for i in range(repeat):
        for name, run, extra, reset in methods:
            started = time.perf_counter()
            dest = run(i)
            times[name].append(round(time.perf_counter() - started, 4))
            total, new = disk(dest, source)
            sizes[name].append(total + extra(dest))
            news[name].append(new + extra(dest))
            reset(dest)
    return [
        Row(
            name,
            times[name],
            int(statistics.median(sizes[name])),
            int(statistics.median(news[name])),
        )
        for name, *_ in methods
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "workspaces.json"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="shipline-bench-") as tmp:
        base = Path(tmp)
        repo = base / "repo"
        started = time.perf_counter()
        build_repo(repo, args.files, args.commits)
        build_s = time.perf_counter() - started
        repo_git_bytes, _ = disk(repo / ".git")
        checkout_bytes = disk(repo)[0] - repo_git_bytes
        root = base / "worktrees"

        def worktree_git_dir(dest: Path) -> int:
            gitdir = repo / ".git" / "worktrees" / dest.name
            return disk(gitdir)[0] if gitdir.exists() else 0

        def ensure(i: int) -> Path:
            return ensure_worktree(repo, root, f"t{i}", "bench ticket").path

        def ensure_reset(dest: Path) -> None:
            remove_worktree(repo, root, dest.name, delete_branch=True)

        def raw_add(i: int) -> Path:
            dest = base / f"raw{i}"
            git(repo, "worktree", "add", "-q", "-b", f"raw{i}", str(dest), "main")
            return dest

        def raw_reset(dest: Path) -> None:
            git(repo, "worktree", "remove", "--force", str(dest))
            git(repo, "branch", "-D", dest.name)

        def clone(flag: list[str]) -> Callable[[int], Path]:
            def run(i: int) -> Path:
                dest = base / f"clone{'-'.join(flag)}{i}"
                git(base, "clone", "-q", *flag, str(repo), str(dest))
                git(dest, "checkout", "-q", "-b", f"ticket{i}")
                return dest

            return run

        def rm(dest: Path) -> None:
            shutil.rmtree(dest)

        methods: list[Method] = [
            ("shipline ensure_worktree", ensure, worktree_git_dir, ensure_reset),
            ("git worktree add", raw_add, worktree_git_dir, raw_reset),
            ("git clone --no-local", clone(["--no-local"]), lambda _: 0, rm),
            ("git clone (local, hard links)", clone([]), lambda _: 0, rm),
        ]
        results = measure(methods, args.repeat, repo)

    ref = results[0]
    print(
        f"repository: {args.files} files, {args.commits} commits, "
        f".git {repo_git_bytes / 2**20:.1f} MiB, checkout {checkout_bytes / 2**20:.1f} MiB "
        f"(built in {build_s:.1f} s); median of {args.repeat}"
    )
    header = (
        f"{'method':32} {'median s':>9} {'x time':>7} {'disk MiB':>9} {'new MiB':>8} {'x new':>6}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for row in results:
        time_ratio = row.seconds / ref.seconds
        disk_ratio = row.new_disk_bytes / ref.new_disk_bytes
        print(
            f"{row.method:32} {row.seconds:9.3f} {time_ratio:7.2f} "
            f"{row.disk_bytes / 2**20:9.1f} {row.new_disk_bytes / 2**20:8.1f} {disk_ratio:6.2f}"
        )
        rows.append(
            {
                **asdict(row),
                "seconds_median": row.seconds,
                "time_ratio_vs_ensure_worktree": round(time_ratio, 2),
                "new_disk_ratio_vs_ensure_worktree": round(disk_ratio, 2),
            }
        )
    report = {
        "benchmark": "workspaces",
        "repository": {
            "files": args.files,
            "commits": args.commits,
            "git_dir_bytes": repo_git_bytes,
            "checkout_bytes": checkout_bytes,
            "build_seconds": round(build_s, 2),
        },
        "repeat": args.repeat,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "git": subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
