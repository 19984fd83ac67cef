"""Latency from a file landing to its cleaning run starting, through `cleanset serve`.

Needs a running Prefect server (PREFECT_API_URL). Starts `cleanset serve` (watcher on, --poll
POLL) in a fresh project folder, then drops N small CSVs into its data/landing/ one after another
(each waits for the previous run to finish, so no run queues behind another) and reports, per
file, from the watcher's `cleanset.file.arrived` event (its `occurred` time) to the flow run being
created by the trigger and to the run's start (state Running), plus from the drop to the event.

    PREFECT_API_URL=http://127.0.0.1:4200/api uv run --frozen python bench/event_latency.py
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, save  # noqa: E402
from tests.conftest import blobs  # noqa: E402


def _event_time(client, path: str) -> datetime | None:  # noqa: ANN001
    found = client.request("POST", "/events/filter", json={
        "filter": {"event": {"name": ["cleanset.file.arrived"]}}, "limit": 50}).json()
    for e in found["events"]:
        if e["payload"].get("path") == path:
            return datetime.fromisoformat(e["occurred"])
    return None


def _run_for(client, path: str):  # noqa: ANN001, ANN202
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
        name=DeploymentFilterName(any_=["on-arrival"])))
    return next((r for r in runs if r.parameters.get("arrived") == path), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--poll", type=float, default=1.0, help="cleanset serve --poll")
    ap.add_argument("--rows", type=int, default=150)
    ap.add_argument("--project", type=Path, help="folder to serve in (default: a temp folder)")
    ap.add_argument("--base-rows", type=int, default=0,
                    help="first land a batch of this many rows and run it (a full run, before "
                    "serving): each arrival then joins a dataset of that size")
    ap.add_argument("--name", default="event_latency", help="bench/results/<name>.md")
    args = ap.parse_args()
    if not os.environ.get("PREFECT_API_URL"):
        sys.exit("set PREFECT_API_URL to a running server (prefect server start --host 127.0.0.1)")
    from prefect.client.orchestration import get_client

    project = args.project or Path(tempfile.mkdtemp(prefix="cleanset-latency-"))
    landing = project / "data" / "landing" / "latency"  # a dataset folder: its batches
    landing.mkdir(parents=True, exist_ok=True)
    (landing / "cleanset.yaml").write_text("label: label\n")
    cleanset = Path(sys.executable).parent / "cleanset"
    base_s = None
    if args.base_rows:  # the dataset the arrivals join: landed and cleaned before serving
        blobs(args.base_rows, seed=99).to_parquet(landing / "batch_base.parquet")
        started = time.perf_counter()
        subprocess.run([str(cleanset), "run", f"{landing}/", "--quiet"], cwd=project,
                       check=True)
        base_s = time.perf_counter() - started
        print(f"base batch of {args.base_rows:,} rows: full run {base_s:.1f} s", flush=True)
    log = open(project / "serve.log", "w")  # noqa: SIM115
    serve = subprocess.Popen([str(cleanset), "serve", "--poll", str(args.poll)], cwd=project,
                             stdout=log, stderr=subprocess.STDOUT)
    rows = []
    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 120
            while True:  # served and its trigger registered
                try:
                    dep = client.read_deployment_by_name("cleanset-dataset/on-arrival")
                    if any(any(getattr(a, "deployment_id", None) == dep.id for a in x.actions)
                           for x in client.read_automations()):
                        break
                except Exception:  # noqa: BLE001 - not registered yet
                    pass
                if time.monotonic() > deadline or serve.poll() is not None:
                    sys.exit(f"cleanset serve did not come up; see {project / 'serve.log'}")
                time.sleep(1)
            for i in range(args.runs):
                path = landing / f"batch_{int(time.time())}_{i}.csv"
                part = path.with_name(path.name + ".part")
                blobs(args.rows, seed=100 + i).to_csv(part, index=False)
                dropped = datetime.now(UTC)
                part.rename(path)
                run = None
                deadline = time.monotonic() + 600 + args.base_rows / 1000
                while time.monotonic() < deadline:
                    run = _run_for(client, str(path.absolute()))
                    if run and run.state and run.state.is_final():
                        break
                    time.sleep(0.5)
                assert run and run.state.is_completed(), f"run for {path} did not complete: {run}"
                occurred = _event_time(client, str(path.absolute()))
                states = {st.name: st.timestamp for st in client.read_flow_run_states(run.id)}
                row = {"file": path.name, "flow_run": run.name, "flow_run_id": str(run.id),
                       "drop_to_event_s": (occurred - dropped).total_seconds(),
                       "event_to_created_s": (run.created - occurred).total_seconds(),
                       "event_to_start_s": (run.start_time - occurred).total_seconds(),
                       "created_to_pending_s": (states["Pending"] - run.created).total_seconds(),
                       "pending_to_running_s": (run.start_time
                                                - states["Pending"]).total_seconds(),
                       "run_s": run.total_run_time.total_seconds()}
                rows.append(row)
                print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.items()), flush=True)
        time.sleep(5)  # let the last run's process exit: stopping serve cancels runs in flight
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
        log.close()
    med = {k: statistics.median(r[k] for r in rows) for k in
           ("drop_to_event_s", "event_to_created_s", "event_to_start_s", "created_to_pending_s",
            "pending_to_running_s", "run_s")}
    print("median: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
    md = ["# Event-to-run-start latency (`cleanset serve`)", "",
          f"{machine()['date']}, {args.runs} files of {args.rows} rows, serve --poll {args.poll}, "
          f"load average {machine()['loadavg_1m']} on {os.cpu_count()} cores. pending_to_running "
          "is the served run's subprocess starting and importing the flow's libraries. "
          f"Command: `{machine()['command']}`"
          + (f". Each file joined a dataset folder of {args.base_rows:,} rows (landed and run "
             f"in full before serving: {base_s:.1f} s); run_s is its incremental run."
             if args.base_rows else ""),
          "", "| | median (s) |", "|---|---|",
          *(f"| {k} | {v:.2f} |" for k, v in med.items()), ""]
    save(args.name, {"machine": machine(), "runs": rows, "median": med, "base_s": base_s,
                           "args": {k: str(v) for k, v in vars(args).items()}}, "\n".join(md))


if __name__ == "__main__":
    main()
