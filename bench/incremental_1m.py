"""A big dataset grown by one batch: the incremental run against a full run of the same data.

One dataset folder (issue 15's benchmark): a first batch of ROWS rows x 20 mixed columns (14
numeric, four with ~2% NaN; 6 categorical; a 5-class label, bench/scale_1m.py's table) with 5%
planted label flips, run in full; then a batch of BATCH more rows of the same table (its own
5% flips) lands and the
folder runs again (incremental: the last full run's fold models score the new rows and its kNN
graph is extended); then the same data is run again with `--full` (everything re-estimated).
All three in one process against one Prefect server and one warehouse, one thread.

Printed: wall time of the incremental and the full run on the same data and their ratio, each
run's seconds per stage, label-issue F1 against the new batch's plant (incremental vs full), and
how many earlier rows changed their flag (incremental against the first run).

    OMP_NUM_THREADS=1 uv run --frozen python bench/incremental_1m.py [--rows N] [--batch M]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, pin_threads, save  # noqa: E402

pin_threads()


def table(n: int, seed: int):  # noqa: ANN201 - (frame, flipped mask)
    """bench/scale_1m.py's table with a known plant: its own 5% flips are undone (the label
    is the rule's), then 5% of rows get another class at random."""
    import numpy as np

    from bench.noise import plant
    from bench.scale_1m import make_data

    frame, clean = make_data(n, seed=seed, with_truth=True)
    names = np.array(["alpha", "beta", "gamma", "delta", "epsilon"])
    noisy, flipped = plant(clean, "symmetric", None, rate=0.05, seed=seed)
    frame["label"] = names[noisy]
    frame.insert(0, "key", [f"r{i:08d}" for i in range(n)])
    return frame, flipped


def f1(flags, truth) -> float:  # noqa: ANN001
    tp = int((flags & truth).sum())
    return 2 * tp / max(int(flags.sum()) + int(truth.sum()), 1)


def flags_of(db: str, run_id: str) -> dict[str, bool]:
    import duckdb

    with duckdb.connect(db, read_only=True) as con:
        return dict(con.execute("SELECT row_id, coalesce(is_label_issue, false) FROM issues "
                                "WHERE run_id = ?", [run_id]).fetchall())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the first batch")
    ap.add_argument("--batch", type=int, default=10_000, help="rows of the batch that lands")
    ap.add_argument("--name", default="incremental_1m", help="bench/results/<name>.md")
    args = ap.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "ERROR")
    import numpy as np
    from prefect.testing.utilities import prefect_test_harness

    from flows.folders import clean_folder

    whole, plant = table(args.rows + args.batch, seed=0)  # one rule; the batch: the last rows
    first, plant0 = whole.iloc[:args.rows], plant[:args.rows]
    batch, plant1 = whole.iloc[args.rows:], plant[args.rows:]
    root = Path(tempfile.mkdtemp(prefix="cleanset-incremental-1m-"))
    folder = root / "data" / "landing" / "big"
    folder.mkdir(parents=True)
    (folder / "cleanset.yaml").write_text("label: label\nid: key\n")
    db = str(root / "data" / "warehouse.duckdb")
    first.to_parquet(folder / "b0.parquet")
    os.utime(folder / "b0.parquet", (1_700_000_000,) * 2)
    runs = {}
    with prefect_test_harness(server_startup_timeout=180):
        for name, step in (("first", None), ("incremental", "land"), ("full", "full")):
            if step == "land":
                batch.to_parquet(folder / "b1.parquet")
                os.utime(folder / "b1.parquet", (1_700_086_400,) * 2)
            started = time.perf_counter()
            summary = clean_folder(str(folder), db=db, full=step == "full")
            seconds = time.perf_counter() - started
            runs[name] = {"seconds": seconds, "summary": summary,
                          "load_1m": round(os.getloadavg()[0], 2)}
            print(f"{name}: {seconds:.1f} s, mode {summary.mode} ({summary.mode_reason}), "
                  f"load {runs[name]['load_1m']}", flush=True)
    truth = dict(zip(batch["key"], plant1, strict=True))
    truth_old = dict(zip(first["key"], plant0, strict=True))
    scores = {}
    for name in ("incremental", "full"):
        got = flags_of(db, runs[name]["summary"].run_id)
        new = [k for k in batch["key"]]
        flags = np.array([got[k] for k in new])
        old = [k for k in first["key"]]
        old_flags = np.array([got[k] for k in old])
        scores[name] = {"f1_new_batch": f1(flags, np.array([truth[k] for k in new])),
                        "f1_earlier_rows": f1(old_flags, np.array([truth_old[k] for k in old])),
                        "flagged_new": int(flags.sum())}
    before = flags_of(db, runs["first"]["summary"].run_id)
    after = flags_of(db, runs["incremental"]["summary"].run_id)
    flipped = sum(before[k] != after[k] for k in first["key"])
    inc, full = runs["incremental"], runs["full"]
    stages = {name: {s["stage"]: round(s["seconds"], 2) for s in r["summary"].stages}
              for name, r in runs.items()}
    result = {
        "rows_first": args.rows, "batch": args.batch,
        "seconds": {k: round(r["seconds"], 1) for k, r in runs.items()},
        "ratio_incremental_full": inc["seconds"] / full["seconds"],
        "load_1m": {k: r["load_1m"] for k, r in runs.items()},
        "modes": {k: f"{r['summary'].mode} ({r['summary'].mode_reason})" for k, r in
                  runs.items()},
        "scores": scores, "earlier_rows_flag_changed": flipped,
        "verdicts_changed_reported": inc["summary"].verdicts_changed,
        "stages": stages,
    }
    print(f"\nincremental {inc['seconds']:.1f} s vs full {full['seconds']:.1f} s on the same "
          f"{args.rows + args.batch:,} rows: ratio {result['ratio_incremental_full']:.3f}")
    print(f"label-issue F1 on the new batch's plant: incremental "
          f"{scores['incremental']['f1_new_batch']:.3f} vs full "
          f"{scores['full']['f1_new_batch']:.3f}"
          f"; earlier rows {scores['incremental']['f1_earlier_rows']:.3f} vs "
          f"{scores['full']['f1_earlier_rows']:.3f}; earlier rows whose flag changed "
          f"(incremental vs first run): {flipped:,}")
    payload = {"args": vars(args), "machine": machine(), "result": result}
    path = save(args.name, payload, render(payload))
    print(f"wrote {path}")


def render(payload: dict) -> str:
    a, m, r = payload["args"], payload["machine"], payload["result"]
    s = r["scores"]
    names = list(r["stages"]["first"])
    for extra in (*r["stages"]["incremental"], *r["stages"]["full"]):
        if extra not in names:
            names.append(extra)
    lines = [
        "# A big dataset grown by one batch: incremental vs full (bench/incremental_1m.py)", "",
        f"{m['date']}, {m['cpus']} cores, load {m['loadavg_1m']} at the end; cleanlab "
        f"{m['versions']['cleanlab']}, scikit-learn {m['versions']['scikit-learn']}, prefect "
        f"{m['versions']['prefect']}. Command: `{m['command']}`", "",
        f"First batch {a['rows']:,} rows x 20 mixed columns (bench/scale_1m.py's table, 5 "
        f"classes, 5% planted flips), then a batch of {a['batch']:,} rows with its own 5% flips;"
        " one dataset folder, one warehouse, one process, one thread.", "",
        "| run | seconds | load (1 min) | mode |", "| --- | --- | --- | --- |"]
    for k in ("first", "incremental", "full"):
        lines.append(f"| {k} | {r['seconds'][k]:.1f} | {r['load_1m'][k]} | {r['modes'][k]} |")
    lines += ["", f"- incremental / full on the same {a['rows'] + a['batch']:,} rows: "
              f"**{r['ratio_incremental_full']:.3f}** (target: at most 0.10)",
              f"- label-issue F1 on the new batch's plant: incremental "
              f"**{s['incremental']['f1_new_batch']:.3f}** vs full "
              f"**{s['full']['f1_new_batch']:.3f}**"
              f" (target: within 0.02); earlier rows {s['incremental']['f1_earlier_rows']:.3f} vs "
              f"{s['full']['f1_earlier_rows']:.3f}",
              f"- earlier rows whose label flag changed between the first run and the "
              f"incremental one: {r['earlier_rows_flag_changed']:,} (the run reports: "
              f"{r['verdicts_changed_reported'] or 'none'})", "",
              "Seconds per stage (the run summary's `stages`):", "",
              "| stage | first (full) | incremental | full again |", "| --- | --- | --- | --- |"]
    for n in names:
        cells = [r["stages"][k].get(n) for k in ("first", "incremental", "full")]
        lines.append(f"| {n} | " + " | ".join("–" if c is None else f"{c:.1f}" for c in cells)
                     + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
