"""Fixed cost, two checkouts side by side (A, B), alternating, on a busy shared machine.

    uv run --frozen python bench/fixed_cost_ab.py --a /work/wt/base --b . [--repeats 5]

The load of this 2-core machine changes by the minute (other sessions), so two runs of
bench/fixed_cost.py at different times do not compare. Here each measurement runs for A, then
for B, then A again, ...: each pair sees about the same load, and the figure that counts is the
median of the paired differences (B - A). Each checkout runs with its own .venv and code
(`<checkout>/.venv/bin/...`, PYTHONPATH=<checkout>). Measured, on bench/fixed_cost's 1,000 x 10
CSV:
- validate: the first `tasks.validate.check` of a process that has imported `flows.clean`
  (what the flow's `validate` task pays: the GX import and the validation), wall and CPU;
- report: charts of a run's report (`tasks.report.render.render_html` on the data of a run
  both checkouts read, after `flows.clean`), first call: matplotlib's import plus the drawing;
- `uv run --frozen cleanset run data.csv --label lable` (a typo: uv's start plus the answer);
- a first run from the shell, `.venv/bin/cleanset run ...`, reporting to the shared server
  (one warm-up run per checkout starts it; not counted); `--no-e2e` skips it.
Written to bench/results/<name>.{json,md}.
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

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import SINGLE_THREAD, machine, save  # noqa: E402
from bench.fixed_cost import make_data  # noqa: E402

VALIDATE = """
import json, sys, time
import flows.clean  # noqa: F401 - what the flow's process has imported before validate
import pandas as pd
df = pd.read_csv(sys.argv[1])
w, c = time.perf_counter(), time.process_time()
from tasks.validate import check
check(df, "label", None, [], None)
print("AB " + json.dumps({"wall": time.perf_counter() - w, "cpu": time.process_time() - c}))
"""

REPORT = """
import json, sys, time
from pathlib import Path
import flows.clean  # noqa: F401
from tasks.report.read import load_report_data
from tasks.report.render import render_html
import duckdb
db = Path(sys.argv[1])
with duckdb.connect(str(db), read_only=True) as con:
    dataset, run = con.execute("SELECT dataset, run_id FROM runs LIMIT 1").fetchone()
w, c = time.perf_counter(), time.process_time()
render_html(load_report_data(db, dataset, run))
print("AB " + json.dumps({"wall": time.perf_counter() - w, "cpu": time.process_time() - c}))
"""


def env(checkout: Path, keep: str = "600") -> dict:
    return {**os.environ, **SINGLE_THREAD, "DO_NOT_TRACK": "1", "PYTHONPATH": str(checkout),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "CLEANSET_SERVER_KEEP": keep}


def run(args: list[str], cwd: Path, checkout: Path, ok: tuple[int, ...] = (0,)) -> tuple[
        float, str]:
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env(checkout), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode not in ok:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout + proc.stderr


def child(checkout: Path, code: str, *args: str) -> dict:
    _, out = run([str(checkout / ".venv/bin/python"), "-c", code, *args], checkout, checkout)
    return json.loads(next(ln for ln in out.splitlines() if ln.startswith("AB ")).split(" ", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, required=True, help="checkout A (before)")
    parser.add_argument("--b", type=Path, default=ROOT, help="checkout B (after)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-e2e", action="store_true", help="skip the first runs from the shell")
    parser.add_argument("--name", default="fixed_cost_ab")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    checkouts = {"A": args.a.resolve(), "B": args.b.resolve()}
    tmp = Path(tempfile.mkdtemp(prefix="fixed_cost_ab_"))
    data = tmp / "data.csv"
    make_data(data)
    uv = str(Path(sys.executable).parents[2] / ".tools/bin/uv")
    if not Path(uv).exists():
        uv = "uv"
    warm = {}
    for side, checkout in checkouts.items():  # starts each checkout's shared server; the report
        folder = tmp / f"warm_{side}"        # measurement reads this run's warehouse
        folder.mkdir()
        run([str(checkout / ".venv/bin/cleanset"), "run", str(data), "--label", "label", "--db",
             str(folder / "w.duckdb"), "--quiet"], tmp, checkout)
        warm[side] = folder / "w.duckdb"
    times: dict[str, dict[str, list[float]]] = {}

    def record(key: str, side: str, seconds: float) -> None:
        times.setdefault(key, {"A": [], "B": []})[side].append(seconds)

    for i in range(args.repeats):
        for side, checkout in checkouts.items():
            v = child(checkout, VALIDATE, str(data))
            record("validate, first check (wall)", side, v["wall"])
            record("validate, first check (CPU)", side, v["cpu"])
            r = child(checkout, REPORT, str(warm["A"]))
            record("report charts, first render (wall)", side, r["wall"])
            record("report charts, first render (CPU)", side, r["cpu"])
            record("uv run: --label typo", side, run(
                [uv, "run", "--frozen", "--project", str(checkout), "cleanset", "run", str(data),
                 "--label", "lable"], tmp, checkout, ok=(2,))[0])
            if not args.no_e2e:
                folder = tmp / f"{side}_{i}"
                folder.mkdir()
                record("venv, shared server: first run", side, run(
                    [str(checkout / ".venv/bin/cleanset"), "run", str(data), "--label", "label",
                     "--db", str(folder / "w.duckdb"), "--quiet"], tmp, checkout)[0])
            print(i, side, {k: round(v[side][-1], 2) for k, v in times.items()}, flush=True)
    for checkout in checkouts.values():
        run([str(checkout / ".venv/bin/python"), "-c", "from flows.local_server import "
             "stop_shared_server; stop_shared_server()"], tmp, checkout)
    rows = {k: {"A_median": statistics.median(v["A"]), "B_median": statistics.median(v["B"]),
                "paired_diff_median": statistics.median(
                    b - a for a, b in zip(v["A"], v["B"], strict=True)),
                "A": v["A"], "B": v["B"]} for k, v in times.items()}
    info = machine()
    lines = [f"# Fixed cost, A/B alternating: 1,000 x 10 CSV ({info['date']})", "",
             f"`python bench/fixed_cost_ab.py {' '.join(sys.argv[1:])}` - {args.note}", "",
             f"A = {checkouts['A']}, B = {checkouts['B']}; {info['cpus']} cores, load "
             f"{info['loadavg_1m']} at the end; one thread per process; {args.repeats} pairs, "
             "A then B each time.", "",
             "| measurement | A median s | B median s | median of B - A (paired) |",
             "|---|---:|---:|---:|"]
    lines += [f"| {k} | {r['A_median']:.2f} | {r['B_median']:.2f} | "
              f"{r['paired_diff_median']:+.2f} |" for k, r in rows.items()]
    save(args.name, {"machine": info, "note": args.note, "a": str(checkouts["A"]),
                     "b": str(checkouts["B"]), "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
