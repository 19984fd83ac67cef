"""Shared helpers for benchmarks: environment facts, timing, result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

# A script run as `python bench/x.py` gets bench/ first on sys.path, where bench/datasets.py would
# shadow the `datasets` package that cleanlab's Datalab imports: every script importing this
# module drops that entry (they import the project from its root).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

RESULTS = Path(__file__).parent / "results"
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def pin_threads() -> None:
    """Both sides single-threaded (BENCHMARKING.md): set before numpy/sklearn are imported."""
    for k, v in SINGLE_THREAD.items():
        os.environ.setdefault(k, v)


def machine() -> dict:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "versions": {p: version(p) for p in ("cleanlab", "scikit-learn", "prefect", "duckdb",
                                             "great-expectations", "pandas", "numpy")},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def timed_cmd(args: list[str], cwd: Path, env: dict | None = None) -> tuple[float, str]:
    """Run a command, return (wall seconds, combined output); raise if it fails."""
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc.stdout + proc.stderr


def save(name: str, payload: dict, markdown: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))
    path = RESULTS / f"{name}.md"
    path.write_text(markdown)
    return path
