"""Incremental against full runs of a dataset that grows by daily batches.

One table with planted label noise (make_classification, 12 numeric columns and a categorical
one, 4 classes, 10% of labels flipped at random, a known mask) lands as a first batch of 80% of
its rows, then as daily batches of 2%. Two copies of the same dataset folder run side by side in
one process, night by night, alternating which goes first: `incremental` (the default settings:
new rows scored by the last full estimation's fold models) and `full` (`incremental: {enabled:
false}`: every run re-estimates). Printed per night: wall time of each run and their ratio, the
incremental arm's mode and how many earlier rows changed verdict (and why); at the end the
label-issue F1 of both arms against the planted mask on the same final data (all rows, and the
rows of the daily batches only).

    OMP_NUM_THREADS=1 uv run --frozen python bench/incremental.py [--rows 20000] [--nights 10]
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


def make_table(n: int, seed: int):  # noqa: ANN201 - (frame, flipped mask)
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    from bench.noise import plant

    X, y = make_classification(n_samples=n, n_features=12, n_informative=8, n_redundant=2,
                               n_classes=4, n_clusters_per_class=2, class_sep=1.2,
                               random_state=seed)
    noisy, flipped = plant(y, "symmetric", None, rate=0.10, seed=seed)
    frame = pd.DataFrame(X.round(5), columns=[f"x{i}" for i in range(12)])
    frame["region"] = np.array(["north", "south", "east", "west", "centre"])[
        np.digitize(X[:, 0], [-1.5, -0.5, 0.5, 1.5])]
    frame["label"] = np.array(["ant", "bee", "cat", "dog"])[noisy]
    frame.insert(0, "key", [f"r{i:07d}" for i in range(n)])
    return frame, flipped


def f1(flags, truth) -> float:  # noqa: ANN001
    tp = int((flags & truth).sum())
    return 2 * tp / max(int(flags.sum()) + int(truth.sum()), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000, help="rows of the final table")
    ap.add_argument("--nights", type=int, default=10, help="daily batches after the first")
    ap.add_argument("--share", type=float, default=0.02, help="rows per daily batch / rows")
    ap.add_argument("--model", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "ERROR")
    import duckdb
    from prefect.testing.utilities import prefect_test_harness

    from flows.folders import clean_folder

    frame, flipped = make_table(args.rows, args.seed)
    daily = int(round(args.share * args.rows))
    first = args.rows - args.nights * daily
    cuts = [0, first, *(first + daily * k for k in range(1, args.nights + 1))]
    root = Path(tempfile.mkdtemp(prefix="cleanset-incremental-"))
    arms = {"incremental": "", "full": "incremental: {enabled: false}\n"}
    homes = {}
    for arm, extra in arms.items():
        folder = root / arm / "data" / "landing" / "growing"
        folder.mkdir(parents=True)
        (folder / "cleanset.yaml").write_text(
            f"label: label\nid: key\nmodel: {args.model}\n{extra}")
        homes[arm] = folder
    nights: list[dict] = []
    print(f"{'night':>5} {'rows':>6} {'incr s':>7} {'full s':>7} {'ratio':>6}  mode / earlier "
          "rows whose verdict changed (incremental | full)", flush=True)
    summaries = {}
    with prefect_test_harness(server_startup_timeout=180):
        for night in range(args.nights + 1):
            part = frame.iloc[cuts[night]:cuts[night + 1]]
            order = list(arms) if night % 2 == 0 else list(reversed(arms))
            seconds = {}
            for arm in order:
                folder = homes[arm]
                path = folder / f"batch_{night:02d}.csv"
                part.to_csv(path, index=False)
                os.utime(path, (1_700_000_000 + night * 86_400,) * 2)
                db = folder.parents[1] / "warehouse.duckdb"
                started = time.perf_counter()
                summaries[arm] = clean_folder(str(folder), db=str(db))
                seconds[arm] = time.perf_counter() - started
            inc, full = summaries["incremental"], summaries["full"]
            row = {"night": night, "rows": cuts[night + 1], "incremental_s": seconds[
                "incremental"], "full_s": seconds["full"],
                "ratio": seconds["incremental"] / seconds["full"], "mode": inc.mode,
                "mode_reason": inc.mode_reason, "n_new_rows": inc.n_new_rows,
                "verdicts_changed_incremental": inc.n_verdicts_changed,
                "why_incremental": inc.verdicts_changed,
                "verdicts_changed_full": full.n_verdicts_changed,
                "why_full": full.verdicts_changed,
                "load_1m": round(os.getloadavg()[0], 2)}
            nights.append(row)
            print(f"{night:>5} {row['rows']:>6} {row['incremental_s']:>7.1f} "
                  f"{row['full_s']:>7.1f} {row['ratio']:>6.2f}  {inc.mode} ({inc.mode_reason}); "
                  f"{inc.n_verdicts_changed} ({inc.verdicts_changed or '-'}) | "
                  f"{full.n_verdicts_changed} ({full.verdicts_changed or '-'})", flush=True)
    truth = dict(zip(frame["key"], flipped, strict=True))
    added = set(frame["key"].iloc[first:])
    scores = {}
    flags_of = {}
    for arm, folder in homes.items():
        db = folder.parents[1] / "warehouse.duckdb"
        with duckdb.connect(str(db), read_only=True) as con:
            got = con.execute("SELECT row_id, coalesce(is_label_issue, false) FROM issues "
                              "WHERE run_id = ?", [summaries[arm].run_id]).fetchall()
        import numpy as np

        keys = [k for k, _ in got]
        flags = np.array([f for _, f in got], dtype=bool)
        true = np.array([truth[k] for k in keys], dtype=bool)
        new = np.array([k in added for k in keys], dtype=bool)
        flags_of[arm] = dict(zip(keys, flags, strict=True))
        scores[arm] = {"f1_all": f1(flags, true), "f1_daily_batches": f1(flags[new], true[new]),
                       "flagged": int(flags.sum())}
    agree = statistics.mean(float(flags_of["incremental"][k] == flags_of["full"][k])
                            for k in flags_of["full"])
    later = [r for r in nights if r["night"] > 0]
    inc_nights = [r for r in later if r["mode"] == "incremental"]
    ratios = [r["ratio"] for r in inc_nights]
    summary = {
        "median_ratio_incremental_nights": statistics.median(ratios) if ratios else None,
        "ratio_range": [min(ratios), max(ratios)] if ratios else None,
        "incremental_nights": len(inc_nights), "nights": len(later),
        "total_s": {arm: sum(r[f"{arm}_s"] for r in later) for arm in arms},
        "f1": scores, "flag_agreement": agree,
        "f1_gap_all": scores["incremental"]["f1_all"] - scores["full"]["f1_all"],
        "f1_gap_daily": (scores["incremental"]["f1_daily_batches"]
                         - scores["full"]["f1_daily_batches"]),
    }
    print(f"\nincremental / full wall time on the {len(inc_nights)} incremental nights: median "
          f"{summary['median_ratio_incremental_nights']:.2f} (range {ratios and min(ratios):.2f}"
          f"-{ratios and max(ratios):.2f}); total over {len(later)} nights "
          f"{summary['total_s']['incremental']:.0f} s vs {summary['total_s']['full']:.0f} s "
          f"({summary['total_s']['incremental'] / summary['total_s']['full']:.2f})")
    print(f"label-issue F1 on the final data: incremental {scores['incremental']['f1_all']:.3f}"
          f" vs full {scores['full']['f1_all']:.3f} (gap {summary['f1_gap_all']:+.3f}); on the "
          f"daily batches' rows {scores['incremental']['f1_daily_batches']:.3f} vs "
          f"{scores['full']['f1_daily_batches']:.3f} ({summary['f1_gap_daily']:+.3f}); the two "
          f"arms agree on {agree:.1%} of the flags")
    info = machine()
    payload = {"args": vars(args), "machine": info, "nights": nights, "summary": summary}
    save("incremental", payload, render(payload))


def render(payload: dict) -> str:
    a, m, s = payload["args"], payload["machine"], payload["summary"]
    lines = [
        "# Incremental vs full runs of a growing dataset (bench/incremental.py)", "",
        f"{m['date']}, {m['cpus']} cores, load {m['loadavg_1m']} at the end, cleanlab "
        f"{m['versions']['cleanlab']}, scikit-learn {m['versions']['scikit-learn']}, "
        f"prefect {m['versions']['prefect']}. Command: `{m['command']}`", "",
        f"{a['rows']:,} rows at the end (make_classification, 12 numeric + 1 categorical column,"
        f" 4 classes, 10% symmetric planted noise); first batch {100 - a['nights'] * a['share'] * 100:.0f}%, then "  # noqa: E501
        f"{a['nights']} daily batches of {a['share']:.0%}; model `{a['model']}`; one thread.",
        "", "| night | rows | incremental s | full s | ratio | incremental mode | earlier rows "
        "changing verdict: incremental | full | load |", "| --- | --- | --- | --- | --- | --- |"
        " --- | --- | --- |"]
    for r in payload["nights"]:
        lines.append(f"| {r['night']} | {r['rows']:,} | {r['incremental_s']:.1f} | "
                     f"{r['full_s']:.1f} | {r['ratio']:.2f} | {r['mode']} | "
                     f"{r['verdicts_changed_incremental']} ({r['why_incremental'] or '-'}) | "
                     f"{r['verdicts_changed_full']} ({r['why_full'] or '-'}) | {r['load_1m']} |")
    f = s["f1"]
    lines += ["", f"- incremental / full wall time, incremental nights ({s['incremental_nights']} "
              f"of {s['nights']}): median **{s['median_ratio_incremental_nights']:.2f}** (range "
              f"{s['ratio_range'][0]:.2f}-{s['ratio_range'][1]:.2f}); total "
              f"{s['total_s']['incremental']:.0f} s vs {s['total_s']['full']:.0f} s",
              f"- label-issue F1 on the same final data: incremental **{f['incremental']['f1_all']:.3f}**"  # noqa: E501
              f" vs full **{f['full']['f1_all']:.3f}** ({s['f1_gap_all']:+.3f}); rows of the daily "
              f"batches {f['incremental']['f1_daily_batches']:.3f} vs "
              f"{f['full']['f1_daily_batches']:.3f} ({s['f1_gap_daily']:+.3f}); flags agree on "
              f"{s['flag_agreement']:.1%} of rows", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
