"""Run one measurement of a bench script in a fresh Python process (its own memory peak, no launcher variables left
over from another run) and read back the one ``BENCH_JSON {...}`` line it prints; the work folder they share."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

PREFIX = "BENCH_JSON "
_LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def emit(result: dict) -> None:
    """The child's side: print the result line."""
    print(PREFIX + json.dumps(result), flush=True)


def run_isolated(script: str, argv: list[str], threads: int | None = None) -> dict:
    """``python script *argv`` in a clean environment; its result dict, or ``{"error": ...}`` (the child's output
    tails are printed to stderr)."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, script, *argv], env=env, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith(PREFIX)), None)
    if proc.returncode != 0 or line is None:
        print(f"{' '.join(argv)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}", file=sys.stderr)
        return {"error": proc.stderr[-500:]}
    return json.loads(line[len(PREFIX):])


@contextlib.contextmanager
def work_dir(path: Path | None, prefix: str = "pfmvg_bench_") -> Iterator[Path]:
    """``path`` (created, kept afterwards), or a temporary folder removed on exit, error or not."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)
