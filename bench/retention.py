"""Disk use of a dataset that grows for a month: 30 nightly runs, a new batch each night.

Two copies of the same dataset folder are run side by side, night by night, in one process:
`keep all` (retention.keep_runs: null, what cleanset did before retention) and `keep 5`
(retention.keep_runs: 5, applied by every run after it publishes, plus the nightly `gc` with
orphans older than --grace hours). Prints and saves, per night: rows, the work folder's bytes
(intermediates + Prefect's cache records), the warehouse file's bytes, the reports' bytes.

    uv run --frozen python bench/retention.py [--nights 30] [--rows 200]
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


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nights", type=int, default=30)
    ap.add_argument("--rows", type=int, default=200, help="rows per nightly batch")
    ap.add_argument("--keep", type=int, default=5)
    ap.add_argument("--grace", type=float, default=0.0, help="gc's orphan grace, hours")
    ap.add_argument("--render", action="store_true", help="only rewrite results/retention.md "
                    "from results/retention.json")
    args = ap.parse_args()
    if args.render:
        import json

        from bench.common import RESULTS

        saved = json.loads((RESULTS / "retention.json").read_text())
        (RESULTS / "retention.md").write_text(render(saved["nights"], saved["args"],
                                                     saved["machine"]))
        return
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "ERROR")
    from prefect.testing.utilities import prefect_test_harness

    from flows.folders import clean_folder
    from tasks.retention import apply_gc, plan_gc
    from tests.conftest import blobs

    root = Path(tempfile.mkdtemp(prefix="cleanset-retention-"))
    setups = {"keep all": "null", f"keep {args.keep}": str(args.keep)}
    folders = {}
    for name, keep in setups.items():
        home = root / name.replace(" ", "_")
        folder = home / "data" / "landing" / "growing"
        folder.mkdir(parents=True)
        (folder / "cleanset.yaml").write_text(
            f"label: label\nmodel: logreg\nfolds: 3\nretention:\n  keep_runs: {keep}\n")
        folders[name] = (home, folder)
    rows: list[dict] = []
    header = (f"{'night':>5} {'rows':>6} | " + " | ".join(
        f"{n:>10} work {'db':>7} {'reports':>7} {'s':>5}" for n in setups))
    print(header, flush=True)
    with prefect_test_harness(server_startup_timeout=180):
        for night in range(1, args.nights + 1):
            line = {"night": night, "rows": night * args.rows}
            for name, (home, folder) in folders.items():
                batch = folder / f"night_{night:02d}.csv"
                blobs(args.rows, d=6, seed=night).to_csv(batch, index=False)
                os.utime(batch, (1_700_000_000 + night * 86_400,) * 2)
                db = home / "data" / "warehouse.duckdb"
                started = time.perf_counter()
                clean_folder(str(folder), db=str(db))
                if name != "keep all":  # the nightly flow's gc after its datasets
                    apply_gc(db, plan_gc(db, db.parent / "work",
                                         orphan_grace_hours=args.grace))
                seconds = time.perf_counter() - started
                line[name] = {"work": folder_bytes(db.parent / "work"), "db": db.stat().st_size,
                              "reports": folder_bytes(db.parent / "reports"),
                              "seconds": round(seconds, 1)}
            rows.append(line)
            print(f"{night:>5} {line['rows']:>6} | " + " | ".join(
                f"{line[n]['work'] / 1e6:>12.2f} MB {line[n]['db'] / 1e6:>5.1f}MB "
                f"{line[n]['reports'] / 1e6:>5.2f}MB {line[n]['seconds']:>5.1f}"
                for n in setups), flush=True)
    info = machine()
    path = save("retention", {"machine": info, "args": vars(args), "nights": rows},
                render(rows, vars(args), info))
    print(f"saved {path}")


def render(rows: list[dict], args: dict, info: dict) -> str:
    """The Markdown table: bytes per night, and work-folder bytes per row of data (the data
    grows every night, so retention levels off the cost per row, not the total)."""
    setups = [k for k in rows[0] if k not in ("night", "rows")]
    md = ["# Disk use over 30 nightly runs (bench/retention.py)", "",
          f"A dataset folder grown by one {args['rows']}-row batch a night (6 numeric features, "
          f"3 classes, logreg, 3 folds); both setups side by side in one process, night by "
          f"night. `keep {args['keep']}`: retention.keep_runs {args['keep']} (applied by each "
          f"run) plus the nightly gc (orphans older than {args['grace']} h); `keep all`: "
          "retention off, what cleanset did before. Bytes of the work folder (intermediates + "
          "Prefect cache records), the warehouse file and the reports; `KB/row`: work-folder "
          "bytes per row of data. The data itself grows every night, so what levels off is the "
          "cost per row (retention keeps a fixed number of runs, each the size of the data) and "
          "the reports; without retention every night adds a whole run of the grown data.",
          "", "| night | rows | " + " | ".join(f"{n}: work MB | KB/row | db MB | reports MB"
                                               for n in setups) + " |",
          "|---:|---:|" + "---:|---:|---:|---:|" * len(setups)]
    for r in rows:
        md.append(f"| {r['night']} | {r['rows']} | " + " | ".join(
            f"{r[n]['work'] / 1e6:.2f} | {r[n]['work'] / 1e3 / r['rows']:.2f} | "
            f"{r[n]['db'] / 1e6:.1f} | {r[n]['reports'] / 1e6:.2f}" for n in setups) + " |")
    md += ["", f"{info['date']}, {info['cpus']} CPUs, load {info['loadavg_1m']}, "
           f"`{info['command']}`, versions {info['versions']}"]
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
