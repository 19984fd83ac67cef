"""timing: where a run's seconds and memory went, stage by stage.

Every stage (tasks.caching.stage) runs through `timed`, which records, for each call that ran
(a cached stage does not run: its seconds are part of the flow's overhead), its wall-clock
interval, the process's resident memory when it ended (RSS) and the process's peak RSS so far
(`ru_maxrss`: a high-water mark of the whole process, never lowered). Stages run in threads of
one process, so neither memory figure is a stage's own: RSS at the end says what the process
held after the stage, the peak says how high it had gone by then; a stage whose peak is above
the previous stage's raised the high-water mark.

Calls are kept per flow run, in this process. With `--runner dask` the fold fits run in other
processes: their calls are not seen here and their seconds count as flow overhead.

Pure functions (stage_rows, compare, stages_markdown, stage_lines) turn the calls into the rows
of the warehouse's `run_stages` table, the run summary's markdown artifact and the CLI's lines.
Standard library only: tasks.caching imports it.
"""

from __future__ import annotations

import functools
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# Stages that fit or apply the model: the rest (ingest, validation, kNN, detection, decide,
# publish, report, ...) are the "non-model" stages whose share issue 18 item 2 bounds.
MODEL_STAGES = frozenset({"choose-model", "estimate-fold", "pred-probs", "unlabeled-pred-probs",
                          "first-pass-flags", "supplied-pred-probs", "evaluate"})
OVERHEAD = "flow overhead"  # flow time outside every recorded stage call
MIB = 1024 * 1024


@dataclass(frozen=True)
class StageCall:
    """One call of a stage's function: wall-clock start and end (epoch seconds), process RSS at
    its end and the process's peak RSS so far (bytes)."""

    stage: str
    started: float
    ended: float
    rss: int
    peak_rss: int


def current_rss() -> int:
    """The process's resident set size now, in bytes (0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss() -> int:
    """The process's peak resident set size so far, in bytes (ru_maxrss: KiB on Linux, bytes on
    macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


_lock = threading.Lock()
_calls: dict[str, list[StageCall]] = {}


def _flow_run_id() -> str | None:
    """The flow run this task run belongs to (None outside a Prefect task run)."""
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    run_id = getattr(getattr(ctx, "task_run", None), "flow_run_id", None)
    return str(run_id) if run_id else None


def record(flow_run_id: str, call: StageCall) -> None:
    with _lock:
        _calls.setdefault(flow_run_id, []).append(call)


def calls_of(flow_run_id: str, forget: bool = False) -> list[StageCall]:
    """The calls recorded for a flow run (and dropped from memory when `forget`)."""
    with _lock:
        return list(_calls.pop(flow_run_id, []) if forget else _calls.get(flow_run_id, []))


def timed(name: str, fn: Callable) -> Callable:
    """`fn` recording a StageCall for its flow run each time it runs (raised errors too)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            flow_run_id = _flow_run_id()
            if flow_run_id:  # the kernel updates ru_maxrss lazily: never below RSS now
                rss = current_rss()
                record(flow_run_id, StageCall(name, started, time.time(), rss,
                                              max(peak_rss(), rss)))

    run.__prefect_task_source__ = fn  # Prefect's task key and cache key: the stage's own code
    return run


def _union_seconds(intervals: Iterable[tuple[float, float]]) -> float:
    """Seconds covered by the union of (start, end) intervals (parallel calls count once)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def stage_rows(calls: list[StageCall], flow_started: float | None = None,
               flow_ended: float | None = None) -> list[dict]:
    """One row per stage, in the order stages first started: calls, seconds (wall time covered
    by its calls: parallel folds count once), busy_seconds (the calls' sum), rss_mib at the end
    of its last call, peak_rss_mib so far, and whether it is a model stage; then a `flow
    overhead` row (flow time outside every call) when the flow's start and end are given."""
    by_stage: dict[str, list[StageCall]] = {}
    for c in sorted(calls, key=lambda c: c.started):
        by_stage.setdefault(c.stage, []).append(c)
    rows = []
    for name, cs in by_stage.items():
        last = max(cs, key=lambda c: c.ended)
        rows.append({"stage": name, "calls": len(cs),
                     "seconds": _union_seconds((c.started, c.ended) for c in cs),
                     "busy_seconds": sum(c.ended - c.started for c in cs),
                     "rss_mib": last.rss / MIB, "peak_rss_mib": max(c.peak_rss for c in cs) / MIB,
                     "model_stage": name in MODEL_STAGES})
    if flow_started is not None and flow_ended is not None:
        covered = _union_seconds((c.started, c.ended) for c in calls)
        rows.append({"stage": OVERHEAD, "calls": 0,
                     "seconds": max(flow_ended - flow_started - covered, 0.0),
                     "busy_seconds": 0.0, "rss_mib": None,
                     "peak_rss_mib": max((c.peak_rss for c in calls), default=0) / MIB or None,
                     "model_stage": False})
    return rows


MIN_COMPARED = 0.05  # seconds: a stage this quick before did next to nothing; no ratio


def compare(rows: list[dict], previous: list[dict]) -> list[dict]:
    """Each row with the previous run's seconds for the same stage and the ratio now/before
    (None where the stage did not run before, e.g. it came from the cache, or took under
    MIN_COMPARED seconds: the first batch's audit, which has nothing to audit against, made the
    second batch's real audit read "4188.98x of previous")."""
    before = {r["stage"]: r["seconds"] for r in previous}
    out = []
    for r in rows:
        prev = before.get(r["stage"])
        out.append({**r, "previous_seconds": prev,
                    "ratio": r["seconds"] / prev if prev and prev >= MIN_COMPARED else None})
    return out


def totals(rows: list[dict]) -> dict:
    """Flow seconds, model and non-model seconds, the non-model share, and the run's peak RSS."""
    total = sum(r["seconds"] for r in rows)
    model = sum(r["seconds"] for r in rows if r["model_stage"])
    peak = max((r["peak_rss_mib"] or 0 for r in rows), default=0)
    return {"seconds": total, "model_seconds": model, "other_seconds": total - model,
            "other_share": (total - model) / total if total else 0.0, "peak_rss_mib": peak}


def _ratio(r: dict) -> str:
    return f"{r['ratio']:.2f}x" if r.get("ratio") is not None else ""


def stages_markdown(rows: list[dict], dataset: str, run_id: str,
                    previous_run: str | None = None) -> str:
    """The run summary's markdown artifact: each stage's seconds, memory and change against
    the previous run of the dataset."""
    t = totals(rows)
    lines = [f"# {dataset}: where the time went (run {run_id})", "",
             f"{t['seconds']:.1f} s in the flow; model stages {t['model_seconds']:.1f} s, the "
             f"rest {t['other_seconds']:.1f} s ({t['other_share']:.0%}); peak RSS "
             f"{t['peak_rss_mib']:,.0f} MiB."
             + (f" Compared with the previous run `{previous_run}`." if previous_run else ""),
             "", "| stage | calls | seconds | share | RSS at end (MiB) | peak RSS so far (MiB) "
             "| previous run (s) | now / before |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = r["seconds"] / t["seconds"] if t["seconds"] else 0.0
        lines.append(
            f"| {r['stage']}{' (model)' if r['model_stage'] else ''} | {r['calls']} | "
            f"{r['seconds']:.2f} | {share:.0%} | "
            + (f"{r['rss_mib']:,.0f}" if r.get("rss_mib") else "") + " | "
            + (f"{r['peak_rss_mib']:,.0f}" if r.get("peak_rss_mib") else "") + " | "
            + (f"{r['previous_seconds']:.2f}" if r.get("previous_seconds") is not None else "")
            + f" | {_ratio(r)} |")
    lines += ["", "RSS is the whole process's (stages run in threads of one process); the peak "
              "is its high-water mark up to the end of that stage. Stages served from the cache "
              "did not run and are not listed. All of them: `cleanset query \"SELECT * FROM "
              f"run_stages WHERE run_id = '{run_id}'\"`"]
    return "\n".join(lines) + "\n"


def stage_lines(rows: list[dict], top: int = 5) -> list[str]:
    """The CLI's lines: the `top` stages by seconds, each with its change against the previous
    run, and the model / non-model split."""
    if not rows:
        return []
    t = totals(rows)
    ranked = sorted(rows, key=lambda r: -r["seconds"])[:top]
    out = [f"{r['stage']} {r['seconds']:.1f} s" + (f" ({_ratio(r)} of previous)"
                                                  if r.get("ratio") is not None else "")
           for r in ranked]
    out.append(f"model {t['model_seconds']:.1f} s, rest {t['other_seconds']:.1f} s "
               f"({t['other_share']:.0%}); peak RSS {t['peak_rss_mib']:,.0f} MiB")
    return out
