"""Fixed cost of a small run (issue 18 item 1): where the seconds of a 1,000 x 10 CSV go.

    uv run --frozen python bench/fixed_cost.py [--repeats 3] [--name fixed_cost]

Measured, on a 1,000-row, 10-feature, 3-class CSV with 10% planted label noise:
- end to end from the shell, `uv run --frozen cleanset run ...` and `.venv/bin/cleanset run ...`
  with a Prefect server per run (CLEANSET_SERVER_KEEP=0), and `.venv/bin/cleanset run ...`
  reporting to the shared server an earlier run left (started once before the first figure):
  first run (fresh warehouse and work folder: nothing cached) and rerun (unchanged data: cached
  stages), medians of --repeats, alternating; plus a typo in --label and a missing file; and the
  default since flows/warm.py: the shared server plus the warm process the previous command
  left, timed once it has imported everything (a user reading the summary first) and back to
  back (the next command right after the previous one: it waits for the imports);
- the obvious cleanlab script from the shell (its own process: pandas + scikit-learn + cleanlab
  imports, read the CSV, 5-fold `cross_val_predict` of HistGradientBoostingClassifier,
  `find_label_issues` defaults): the peer (bench/BENCHMARKING rules: one thread each);
- inside one first run (a child process): the imports before the flow, the temporary Prefect
  server's start and how long the flow still waits for it, the flow's own overhead, and every
  task run's seconds as the Prefect API recorded them;
- the import profile (`python -X importtime -c "import flows.clean"`: cumulative seconds of the
  heavy packages) and Great Expectations alone (import, context, the generic suite on the frame);
- one model fit (HistGradientBoosting, logistic regression) with the libraries' default threads
  against one thread, in a child without OMP_NUM_THREADS (what tasks/estimate.one_thread avoids).
`--sections shell,profile,gx,threads,imports` runs only some parts (default: all).
Everything is written to bench/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
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

VENV_BIN = Path(sys.executable).parent
HEAVY = ("prefect", "sklearn", "cleanlab", "great_expectations", "matplotlib", "pandas",
         "duckdb", "scipy", "pyarrow")

PEER = """
import sys, time
import pandas as pd
from cleanlab.filter import find_label_issues
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import cross_val_predict
df = pd.read_csv(sys.argv[1])
y = df.pop("label").astype("category").cat.codes.to_numpy()
probs = cross_val_predict(HistGradientBoostingClassifier(random_state=0), df.to_numpy(), y,
                          cv=5, method="predict_proba")
print(int(find_label_issues(y, probs, n_jobs=1).sum()), "label issues")
"""

# A first run inside one process, timed phase by phase; task runs read back from the API.
PROFILE = """
import json, sys, time
t0 = time.perf_counter()
from flows.local_server import LocalServer
server = LocalServer()
t_spawn = time.perf_counter()
from flows.clean import clean_dataset
from tasks.spec import build_spec
t_import = time.perf_counter()
server.wait()
t_ready = time.perf_counter()
from prefect.settings import PREFECT_API_URL, temporary_settings
spec = build_spec(source=sys.argv[1], label="label", db=sys.argv[2])
with temporary_settings({PREFECT_API_URL: server.url}):
    summary = clean_dataset(spec)
    t_flow = time.perf_counter()
    import duckdb
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    with duckdb.connect(sys.argv[2], read_only=True) as con:
        flow_run_id = con.execute("SELECT flow_run_id FROM runs WHERE run_id = ?",
                                  [summary.run_id]).fetchall()[0][0]
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[flow_run_id])))
tasks = {}
for r in runs:
    if r.start_time and r.end_time:
        name = r.name.rsplit("-", 1)[0]
        tasks[name] = tasks.get(name, 0.0) + (r.end_time - r.start_time).total_seconds()
first = min(r.start_time for r in runs if r.start_time)
last = max(r.end_time for r in runs if r.end_time)
server.stop()
print("PROFILE " + json.dumps({
    "spawn_server_s": t_spawn - t0, "imports_s": t_import - t_spawn,
    "server_wait_s": t_ready - t_import, "server_ready_after_s": t_ready - t0,
    "flow_call_s": t_flow - t_ready,
    "flow_start_to_first_task_s": (first - flow_run.start_time).total_seconds(),
    "tasks_span_s": (last - first).total_seconds(),
    "last_task_to_flow_end_s": (flow_run.end_time - last).total_seconds(),
    "tasks": dict(sorted(tasks.items(), key=lambda kv: -kv[1])),
}))
"""

GX = """
import json, sys, time
t0 = time.perf_counter()
import pandas as pd
df = pd.read_csv(sys.argv[1])
t0 = time.perf_counter()
import tasks.validate
from tasks.validate import check
t1 = time.perf_counter()
import_gx = getattr(tasks.validate, "import_gx", None)  # as validate imports it (since i18fc)
if import_gx is None:
    import great_expectations as gx
else:
    gx = import_gx()
t2 = time.perf_counter()
t3 = time.perf_counter()
check(df, "label", None, [], None)
t4 = time.perf_counter()
check(df, "label", None, [], None)
t5 = time.perf_counter()
print("GX " + json.dumps({"import_tasks_validate_s": t1 - t0, "import_gx_s": t2 - t1,
                          "first_check_s": t4 - t3, "second_check_s": t5 - t4}))
"""

# One model fit with the libraries' default threads (one per core) against one thread: the
# child runs without the single-thread environment, as a user's run does (tasks/estimate.py,
# one_thread).
THREADS = """
import json, time
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_info, threadpool_limits
cores = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp")
rng = np.random.default_rng(0)
out = {}
for n in (700, 1000, 80000):
    X = rng.normal(size=(n, 10))
    y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(size=n) > 0).astype(int) + (X[:, 3] > 1)
    for name, make in (("hgb", lambda: HistGradientBoostingClassifier(
            max_iter=100, max_leaf_nodes=15, min_samples_leaf=40, l2_regularization=1.0,
            random_state=0)), ("logreg", lambda: LogisticRegression(max_iter=1000))):
        if name == "logreg" and n > 1000:
            continue
        for threads in (cores, 1):
            seconds = []
            for _ in range(2):
                start = time.perf_counter()
                with threadpool_limits(threads):
                    make().fit(X, y)
                seconds.append(time.perf_counter() - start)
            out[f"{name} fit, {n:,} rows, {threads} thread(s)"] = min(seconds)
print("THREADS " + json.dumps(out))
"""


def make_data(path: Path, rows: int = 1000, features: int = 10) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=rows, n_features=features, n_informative=6,
                               n_classes=3, random_state=0)
    flip = np.random.default_rng(0).random(rows) < 0.1
    y[flip] = (y[flip] + 1) % 3
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(features)])
    frame["label"] = np.array(["a", "b", "c"])[y]
    frame.to_csv(path, index=False)


def env() -> dict:
    # PYTHONPATH: this checkout's code even where the console script's install points elsewhere
    return {**os.environ, **SINGLE_THREAD, "DO_NOT_TRACK": "1", "PYTHONPATH": str(ROOT),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def wall(args: list[str], cwd: Path, ok: tuple[int, ...] = (0,),
         environment: dict | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=environment or env(), capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    if proc.returncode not in ok:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout + proc.stderr


def child(code: str, marker: str, *args: str, threads: bool = False) -> dict:
    environment = None
    if threads:  # the libraries' default thread counts, as in a user's shell
        environment = {k: v for k, v in env().items() if k not in SINGLE_THREAD}
    _, out = wall([sys.executable, "-c", code, *args], ROOT, environment=environment)
    line = next(ln for ln in out.splitlines() if ln.startswith(marker + " "))
    return json.loads(line.split(" ", 1)[1])


def import_profile() -> dict:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import flows.clean"],
                          cwd=ROOT, env=env(), capture_output=True, text=True, check=True)
    seconds: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and m.group(3) in (*HEAVY, "flows.clean"):
            seconds[m.group(3)] = max(seconds.get(m.group(3), 0.0), int(m.group(1)) / 1e6)
    return dict(sorted(seconds.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="fixed_cost")
    parser.add_argument("--note", default="", help="what this run measures (e.g. before/after)")
    parser.add_argument("--sections", default="shell,profile,gx,threads,imports")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="fixed_cost_"))
    data = tmp / "data.csv"
    make_data(data)
    uv = shutil.which("uv") or str(ROOT / ".tools/bin/uv")
    launchers = {"venv": [str(VENV_BIN / "cleanset")],
                 "uv run": [uv, "run", "--frozen", "--project", str(ROOT), "cleanset"]}
    # CLEANSET_SERVER_KEEP=0: a Prefect server per run (as before the shared server); "venv,
    # shared server": the server the previous run left (flows/local_server.SharedServer)
    own_server = {**env(), "CLEANSET_SERVER_KEEP": "0"}
    shared = {**env(), "CLEANSET_SERVER_KEEP": "300", "CLEANSET_WARM": "0"}
    # the default since flows/warm.py: the shared server and the warm process the previous
    # command left; timed once that process has imported everything (a user reading the
    # summary), and right after the previous command ("back to back": it is still importing)
    warm_env = {**env(), "CLEANSET_SERVER_KEEP": "300"}
    ready_code = ("import sys, time\nfrom flows.warm import ready\nt = time.monotonic()\n"
                  "while not ready() and time.monotonic() - t < 120: time.sleep(0.1)\n"
                  "sys.exit(0 if ready() else 1)")
    times: dict[str, list[float]] = {}

    def record(key: str, seconds: float) -> None:
        times.setdefault(key, []).append(seconds)

    if "shell" in sections:  # the shared server's first boot is not part of any figure
        warm = tmp / "warm" / "w.duckdb"
        warm.parent.mkdir()
        wall([launchers["venv"][0], "run", str(data), "--label", "label", "--db", str(warm),
              "--quiet"], tmp, environment=shared)
        wall([launchers["venv"][0], "run", str(data), "--label", "label", "--db", str(warm),
              "--quiet"], tmp, environment=warm_env)  # leaves the first warm process
    for i in range(args.repeats if "shell" in sections else 0):
        for name, launcher in [*launchers.items(), ("venv, shared server", launchers["venv"])]:
            folder = tmp / f"{name.replace(' ', '_').replace(',', '')}_{i}"
            folder.mkdir()
            run = [*launcher, "run", str(data), "--label", "label", "--db",
                   str(folder / "w.duckdb"), "--quiet"]
            environment = shared if "shared" in name else own_server
            record(f"{name}: first run", wall(run, tmp, environment=environment)[0])
            record(f"{name}: rerun (cached)", wall(run, tmp, environment=environment)[0])
            if "shared" in name:
                continue
            record(f"{name}: --label typo", wall([*launcher, "run", str(data), "--label",
                                                  "lable"], tmp, environment=own_server,
                                                 ok=(2,))[0])
            record(f"{name}: missing file", wall([*launcher, "run", str(tmp / "nope.csv"),
                                                  "--label", "label"], tmp,
                                                 environment=own_server, ok=(2,))[0])
        name = "venv, shared server + warm process (default)"
        folder = tmp / f"warm_{i}"
        folder.mkdir()
        run = [launchers["venv"][0], "run", str(data), "--label", "label", "--db",
               str(folder / "w.duckdb"), "--quiet"]
        for label in ("first run", "rerun (cached)"):
            wall([sys.executable, "-c", ready_code], tmp, environment=warm_env)
            record(f"{name}: {label}", wall(run, tmp, environment=warm_env)[0])
        (folder / "w.duckdb").unlink()
        shutil.rmtree(folder / "work", ignore_errors=True)
        record(f"{name}: first run, back to back", wall(run, tmp, environment=warm_env)[0])
        record("peer script (python, HGB 5-fold + find_label_issues)",
               wall([sys.executable, "-c", PEER, str(data)], tmp)[0])
    if "shell" in sections:
        wall([sys.executable, "-c", "from flows.local_server import stop_shared_server; "
              "stop_shared_server()"], tmp, environment=shared)  # the runs' folder: its key
        wall([sys.executable, "-c", "from flows.warm import stop_waiting; stop_waiting()"], tmp,
             environment=warm_env)
    medians = {k: {"median_s": round(statistics.median(v), 2), "min_s": round(min(v), 2),
                   "max_s": round(max(v), 2)} for k, v in times.items()}
    (tmp / "profile").mkdir()
    profile = child(PROFILE, "PROFILE", str(data), str(tmp / "profile" / "w.duckdb")) if (
        "profile" in sections) else {"tasks": {}}
    gx = child(GX, "GX", str(data)) if "gx" in sections else {}
    threads = child(THREADS, "THREADS", threads=True) if "threads" in sections else {}
    imports = import_profile() if "imports" in sections else {}
    payload = {**machine(), "note": args.note, "repeats": args.repeats, "shell": medians,
               "first_run_profile": profile, "great_expectations": gx,
               "threads_per_fit_s": threads,
               "import_cumulative_s": imports}
    lines = [f"# Fixed cost: 1,000 x 10 CSV ({payload['date']})", "",
             f"`{payload['command']}` - {args.note}".rstrip(" -"), "",
             f"{payload['cpus']} cores, load {payload['loadavg_1m']} at the end; one thread per "
             f"process; medians of {args.repeats} (min-max).", "",
             "| command | median s | min-max |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['median_s']:.2f} | {v['min_s']:.2f}-{v['max_s']:.2f} |"
              for k, v in medians.items()]
    lines += ["", "## Inside one first run (one process)", "", "| phase | s |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in profile.items() if k != "tasks"]
    lines += [f"| task {k} | {v:.2f} |" for k, v in profile["tasks"].items()]
    lines += ["", "## Great Expectations alone", "", "| step | s |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in gx.items()]
    lines += ["", "## Threads per fit (min of 2; default threads = one per core, no "
              "OMP_NUM_THREADS)", "", "| fit | s |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in threads.items()]
    lines += ["", "## Imports (`python -X importtime -c 'import flows.clean'`, cumulative)", "",
              "| module | s |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in imports.items()]
    path = save(args.name, payload, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten: {path}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
