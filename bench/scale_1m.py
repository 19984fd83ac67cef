"""Scale: the real CLI end to end on rows x 20 mixed columns (numeric, categorical, some NaN).

For each size it generates a Parquet file, runs `cleanset run FILE --label label` as a user
would (a fresh process that starts its own local Prefect server), and measures the wall time and
the peak resident memory of the whole process tree (CLI + server + any workers, summed, sampled
every 0.2 s with psutil). It also measures ingestion alone (tasks.ingest.read_snapshot in its own
process) to show that it streams: its peak should not grow with the rows.

    uv run --frozen python bench/scale_1m.py                      # 250k, 500k, 1M rows
    uv run --frozen python bench/scale_1m.py --rows 1000000       # one size

Writes bench/results/scale_1m.json and .md (`--out NAME`: NAME.json and .md). After each run it
also reads the run's warehouse: seconds and peak RSS per stage (run_stages), label-issue
precision / recall / F1 against the 5% planted flips, and how many rows are flagged as outliers
and near duplicates (this table plants none of those: the counts show whether a change to the
kNN graph moved them).
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


def warehouse_figures(db: Path, flipped: np.ndarray) -> dict:
    """The run's stages (seconds, peak RSS MiB) and its flags against the plant."""
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        run_id = con.execute("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1"
                             ).fetchone()[0]
        stages = con.execute("SELECT stage, seconds, peak_rss_mib FROM run_stages "
                             "WHERE run_id = ? ORDER BY position", [run_id]).fetchall()
        cols = {r[0] for r in con.execute("DESCRIBE issues").fetchall()}
        wanted = [c for c in ("is_label_issue", "is_outlier_issue", "is_near_duplicate_issue")
                  if c in cols]
        picked = ", ".join(f"coalesce({c}, false) AS {c}" for c in wanted)
        flags = con.execute(f"SELECT row_id, {picked} FROM issues WHERE run_id = ? "
                            "ORDER BY row_id", [run_id]).fetchnumpy()
    rows = flags["row_id"].astype(np.int64)
    out = {"stages": {name: {"seconds": round(float(sec), 1), "peak_rss_mib": peak and
                             round(float(peak))} for name, sec, peak in stages}}
    for c in wanted:
        flagged = np.asarray(flags[c], dtype=bool)
        out[f"n_{c}"] = int(flagged.sum())
        if c == "is_label_issue":
            truth = flipped[rows]
            tp = int((flagged & truth).sum())
            out["label_issue_precision"] = round(tp / max(int(flagged.sum()), 1), 4)
            out["label_issue_recall"] = round(tp / max(int(truth.sum()), 1), 4)
            out["label_issue_f1"] = round(2 * tp / max(int(flagged.sum() + truth.sum()), 1), 4)
    return out


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
    ap.add_argument("--out", default=None, help="results file name (default scale_1m)")
    args = ap.parse_args()
    env = {**os.environ, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "CLEANSET_SERVER_KEEP": "0"}  # a server per run, as in the earlier results
    env.pop("PREFECT_API_URL", None)  # as a user runs it: the CLI starts its own local server
    results = []
    for n in args.rows:
        folder = Path(tempfile.mkdtemp(prefix=f"cleanset_scale_{n}_"))
        frame, truth = make_data(n, with_truth=True)
        names = np.array(["alpha", "beta", "gamma", "delta", "epsilon"])
        flipped = frame["label"].to_numpy() != names[truth]
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
               "ingest_only_peak_rss_gib": ingest["peak_rss_tree_gib"],
               **(warehouse_figures(folder / "wh.duckdb", flipped) if run["exit_code"] == 0
                  else {})}
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("output_tail", "stages")}),
              flush=True)
        for name, st in row.get("stages", {}).items():
            print(f"  {name:<24} {st['seconds']:>7.1f} s  peak {st['peak_rss_mib']} MiB",
                  flush=True)
        print(run["output_tail"], flush=True)
        if not args.keep:
            subprocess.run(["rm", "-rf", str(folder)], check=False)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                       f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM",
            "python": platform.python_version(), "command": " ".join(sys.argv)}
    name = args.out or ("scale_1m" if 1_000_000 in args.rows else
                        "scale_" + "_".join(map(str, args.rows)))
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
    for r in results:
        if "label_issue_f1" in r:
            lines += ["", f"{r['rows']:,} rows: label issues precision {r['label_issue_precision']}"
                      f", recall {r['label_issue_recall']}, F1 **{r['label_issue_f1']}** against "
                      "the planted flips; rows flagged: "
                      + ", ".join(f"{k[5:-6]} {v:,}" for k, v in r.items()
                                  if k.startswith("n_is_")), "",
                      "| stage | seconds | peak RSS MiB |", "| --- | --- | --- |",
                      *(f"| {k} | {v['seconds']} | {v['peak_rss_mib']} |"
                        for k, v in r["stages"].items())]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
