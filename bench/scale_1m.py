"""Scale: the real CLI end to end on rows x 20 mixed columns (numeric, categorical, some NaN).

For each size it generates a Parquet file, runs `cleanset run FILE --label label` as a user
would (a fresh process that starts its own local Prefect server), and measures the wall time and
the peak resident memory of the whole process tree (CLI + server + any workers, summed, sampled
every 0.2 s with psutil). It also measures ingestion alone (tasks.ingest.read_snapshot in its own
process) to show that it streams: its peak should not grow with the rows.

    uv run --frozen python bench/scale_1m.py                      # 250k, 500k, 1M rows
    uv run --frozen python bench/scale_1m.py --rows 1000000       # one size

Writes bench/results/scale_1m.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def make_data(n: int, seed: int = 0, with_truth: bool = False):  # noqa: ANN201
    """n rows x 20 features (14 numeric with ~2% NaN in four, 6 categorical) + a 5-class label
    that depends on them, with 5% of labels flipped. `with_truth`: (frame, the rule's class
    index per row before the flips)."""
    rng = np.random.default_rng(seed)
    num = rng.normal(size=(n, 14)).astype(np.float64)
    cats = {f"c{i}": rng.integers(0, card, size=n) for i, card in enumerate((3, 5, 8, 12, 20, 40))}
    score = num[:, :5] @ rng.normal(size=(5, 5)) + np.stack(
        [(cats["c1"] == k).astype(float) for k in range(5)], axis=1)
    y = score.argmax(axis=1)
    truth = y.copy()
    flip = rng.random(n) < 0.05
    y[flip] = rng.integers(0, 5, size=int(flip.sum()))
    frame = pd.DataFrame(num, columns=[f"x{i}" for i in range(14)])
    for i in range(4):
        frame.loc[rng.random(n) < 0.02, f"x{i}"] = np.nan
    for name, codes in cats.items():
        frame[name] = pd.Series([f"{name}_v{v}" for v in range(codes.max() + 1)]).to_numpy()[codes]
    frame["label"] = np.array(["alpha", "beta", "gamma", "delta", "epsilon"])[y]
    return (frame, truth) if with_truth else frame


def _stage_lines(output: str) -> str:
    """The timestamped log lines that show when each stage finished."""
    keep = ("Finished in state", "published", "model:", "ingested", "issues:", "kNN graph")
    return "\n".join(line for line in output.splitlines() if any(k in line for k in keep))


def measure(cmd: list[str], cwd: Path, env: dict) -> dict:
    """Run cmd; wall time and peak RSS (sum over the process tree, and the largest process)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    peak_tree = peak_one = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            peak_tree, peak_one = max(peak_tree, sum(rss)), max(peak_one, max(rss, default=0))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.2)
    output = proc.stdout.read()
    return {"seconds": round(time.perf_counter() - started, 1), "exit_code": proc.returncode,
            "peak_rss_tree_gib": round(peak_tree / 2**30, 3),
            "peak_rss_largest_gib": round(peak_one / 2**30, 3), "output_tail": _stage_lines(output)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[250_000, 500_000, 1_000_000])
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    env = {**os.environ, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "CLEANSET_SERVER_KEEP": "0"}  # a server per run, as in the earlier results
    env.pop("PREFECT_API_URL", None)  # as a user runs it: the CLI starts its own local server
    results = []
    for n in args.rows:
        folder = Path(tempfile.mkdtemp(prefix=f"cleanset_scale_{n}_"))
        frame = make_data(n)
        path = folder / f"scale_{n}.parquet"
        frame.to_parquet(path, index=False)
        del frame
        load_before = os.getloadavg()
        ingest = measure([sys.executable, "-c", (
            "import sys; from pathlib import Path; from tasks.ingest import read_snapshot; "
            "s = read_snapshot(sys.argv[1], None, Path(sys.argv[2])); print(s.table.n_rows)"),
            str(path), str(folder / "ingest_only")], ROOT, env)
        cmd = ["uv", "run", "--frozen", "cleanset", "run", str(path), "--label", "label",
               "--db", str(folder / "wh.duckdb"), "--verbose"]
        run = measure(cmd, ROOT, env)
        row = {"rows": n, "columns": 20, "file_mib": round(path.stat().st_size / 2**20, 1),
               "command": " ".join(cmd), "load_before": [round(x, 2) for x in load_before],
               "load_after": [round(x, 2) for x in os.getloadavg()], **run,
               "ingest_only_seconds": ingest["seconds"],
               "ingest_only_peak_rss_gib": ingest["peak_rss_tree_gib"]}
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "output_tail"}), flush=True)
        print(run["output_tail"], flush=True)
        if not args.keep:
            subprocess.run(["rm", "-rf", str(folder)], check=False)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                       f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM",
            "python": platform.python_version(), "command": " ".join(sys.argv)}
    name = "scale_1m" if 1_000_000 in args.rows else "scale_" + "_".join(map(str, args.rows))
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "results": results},
                                                     indent=2))
    lines = [f"# cleanset end to end at scale ({meta['date']})", "",
             f"Machine: {meta['machine']}; Python {meta['python']}. Command: "
             f"`{meta['command']}`; each size runs `cleanset run FILE --label label` in a fresh "
             "process (it starts its own local Prefect server). Peak RSS is summed over the "
             "whole process tree, sampled every 0.2 s.", "",
             "| rows | file MiB | wall s | exit | peak RSS tree GiB | largest process GiB | "
             "ingest alone s | ingest alone peak GiB | load avg before -> after |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['rows']:,} | {r['file_mib']} | {r['seconds']} | {r['exit_code']} | "
                     f"{r['peak_rss_tree_gib']} | {r['peak_rss_largest_gib']} | "
                     f"{r['ingest_only_seconds']} | {r['ingest_only_peak_rss_gib']} | "
                     f"{r['load_before'][0]} -> {r['load_after'][0]} |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
