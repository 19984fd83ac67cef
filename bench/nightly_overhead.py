"""What the nightly parent flow costs over running each dataset folder's flow by itself.

N small dataset folders under one landing folder, warmed once (every stage cached, as on a night
with no new data, where the fixed cost of a flow run shows most). Then, alternating, --repeats
times: A = `nightly(landing, gc=False)` (one parent flow run, a subflow run per dataset) and
B = `clean_folder(folder)` called for each dataset one after the other (one top-level flow run
each). The overhead of the parent flow is A - B; both sides run in this process against the
same Prefect server.

    uv run --frozen python bench/nightly_overhead.py [--datasets 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, pin_threads, save  # noqa: E402

pin_threads()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=200)
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "ERROR")
    from prefect.testing.utilities import prefect_test_harness

    from flows.folders import clean_folder, dataset_folders, nightly
    from tests.conftest import blobs

    root = Path(tempfile.mkdtemp(prefix="cleanset-nightly-"))
    landing = root / "data" / "landing"
    db = str(root / "data" / "warehouse.duckdb")
    for i in range(args.datasets):
        folder = landing / f"set{i}"
        folder.mkdir(parents=True)
        (folder / "cleanset.yaml").write_text("label: label\nmodel: logreg\nfolds: 3\n")
        blobs(args.rows, seed=i).to_csv(folder / "b1.csv", index=False)
    parent, separate = [], []
    with prefect_test_harness(server_startup_timeout=180):
        nightly(landing=str(landing), db=db, gc=False)  # warm: every stage cached from here
        for _ in range(args.repeats):
            started = time.perf_counter()
            outcome = nightly(landing=str(landing), db=db, gc=False)
            parent.append(time.perf_counter() - started)
            assert all("completed" in v for v in outcome.values()), outcome
            started = time.perf_counter()
            for folder in dataset_folders(landing):
                clean_folder(str(folder), db=db)
            separate.append(time.perf_counter() - started)
            print(f"parent flow {parent[-1]:.1f} s, separate flows {separate[-1]:.1f} s",
                  flush=True)
    med_a, med_b = statistics.median(parent), statistics.median(separate)
    info = machine()
    md = ["# Nightly: a parent flow with subflows vs one flow run per dataset", "",
          f"{args.datasets} dataset folders of {args.rows} rows, every stage cached (a night "
          f"with no new data), {args.repeats} repeats alternating A and B in one process "
          f"against one Prefect server.", "",
          "| | median s | min-max s |", "|---|---:|---:|",
          f"| A: `nightly` (parent + {args.datasets} subflows) | {med_a:.1f} | "
          f"{min(parent):.1f}-{max(parent):.1f} |",
          f"| B: {args.datasets} separate `clean_folder` runs | {med_b:.1f} | "
          f"{min(separate):.1f}-{max(separate):.1f} |",
          f"| overhead A - B | {med_a - med_b:+.1f} ({(med_a / med_b - 1) * 100:+.0f}%) | |", "",
          f"{info['date']}, {info['cpus']} CPUs, load {info['loadavg_1m']}, `{info['command']}`"]
    path = save("nightly_overhead", {"machine": info, "args": vars(args), "parent_s": parent,
                                     "separate_s": separate}, "\n".join(md) + "\n")
    print("\n".join(md))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
