"""The report's charts: matplotlib figures rendered as inline PNGs (no display, no files)."""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tasks.report.read import BINS

MATRIX_CLASSES = 15  # the noise matrix shows at most this many classes (most issues first)

INK, MUTED, RED, GREEN, BLUE, AMBER = "#1f2933", "#9aa5b1", "#d64545", "#3f9142", "#2680c2", \
    "#de911d"


def pyplot():  # noqa: ANN202 - matplotlib is imported lazily and without a display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
        "axes.edgecolor": MUTED, "axes.labelcolor": INK, "xtick.color": INK, "ytick.color": INK,
        "axes.titlesize": 10, "axes.titleweight": "bold", "svg.hashsalt": "cleanset",
    })
    return plt


DPI = 192  # 2x the CSS pixel density (96 per inch): sharp on high-density screens


@dataclass(frozen=True)
class Chart:
    """A rendered chart: its data: URI and the width (CSS px) that shows it at its design size,
    so every chart's text has the same size on the page."""

    src: str
    width: int


def _png(fig) -> Chart:  # noqa: ANN001
    """The figure as an inline PNG, closed afterwards."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    data = buf.getvalue()
    width = int.from_bytes(data[16:20], "big")  # the PNG header's IHDR width
    return Chart("data:image/png;base64," + base64.b64encode(data).decode(),
                 round(width * 96 / DPI))


TREND_SERIES = (("health_score", BLUE, "-", "health (rows with no issue)"),
                ("label_health_score", AMBER, "-", "label health"),
                ("well_labeled_share", GREEN, "--", "well labeled (share of rows)"))


def trend_series(history: list[dict]) -> list[tuple[str, str, str, str]]:
    """The health trend's series with at least one value over these runs: (key, colour, line
    style, legend name)."""
    return [s for s in TREND_SERIES if any(r.get(s[0]) is not None for r in history)]


def warm_up() -> None:
    """Draw one small chart of the common kinds and throw them away: a process's first drawing
    loads fonts and fills matplotlib's text caches (bench: the first issue-count, score and
    noise-matrix charts took 2-3x the time of the same charts drawn again). The warm process
    (flows/warm.py) does it while it waits, so a run's report does not."""
    hist = {"other": [1] * BINS, "flagged": [0] * BINS, "cut": 0.5}
    chart_issue_counts([{"issue_type": "label", "num_issues": 1}], 10)
    chart_scores({"label": hist, "outlier": hist}, ["label", "outlier"])
    chart_noise_matrix([("a", "b", 1), ("b", "a", 2)])


def chart_trend(history: list[dict], run_id: str) -> Chart | None:
    """Health, label health and the share of rows certified well-labeled over this dataset's
    runs (one axis: all three are shares of rows in [0, 1]); None when this is the first."""
    if len(history) < 2:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 2.4))
    x = list(range(len(history)))
    lowest = 0.5
    for key, colour, style, name in trend_series(history):
        ys = [r.get(key) for r in history]
        lowest = min(lowest, *(y for y in ys if y is not None))
        ax.plot(x, [math.nan if y is None else y for y in ys], marker="o", color=colour,
                ls=style, label=name, lw=2, ms=4)
    here = [i for i, r in enumerate(history) if r["run_id"] == run_id]
    if here:
        ax.axvline(here[0], color=MUTED, ls=":", lw=1)
    ax.set_ylim(max(-0.02, lowest - 0.02), 1.01)
    labels = [f"{_short_time(r['finished_at'] or r['started_at'])}\n{r['run_id'][:8]}"
              for r in history]
    step = max(1, len(x) // 8)
    ax.set_xticks(x[::step], labels[::step], rotation=0)
    ax.set_ylabel("score / share of rows")
    ax.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8)
    ax.grid(axis="y", color="#e4e7eb", lw=0.8)
    return _png(fig)


def _short_time(value: Any) -> str:
    return value.strftime("%m-%d %H:%M") if isinstance(value, datetime) else str(value or "")


def chart_issue_counts(summary: list[dict], n_rows: int) -> Chart | None:
    """Rows flagged per issue type (horizontal bars, counts and shares written on them)."""
    if not summary:
        return None
    plt = pyplot()
    rows = list(reversed(summary))
    fig, ax = plt.subplots(figsize=(5.6, 0.32 * len(rows) + 0.6))
    counts = [r["num_issues"] for r in rows]
    colours = [RED if r["issue_type"] == "label" and c else (AMBER if c else MUTED)
               for r, c in zip(rows, counts, strict=True)]
    bars = ax.barh([r["issue_type"].replace("_", " ") for r in rows], counts, color=colours)
    top = max(counts) or 1
    for bar, c in zip(bars, counts, strict=True):
        share = f" ({c / n_rows:.1%})" if n_rows and c else ""
        ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2,
                f"{c:,}{share}", va="center", fontsize=8, color=INK)
    ax.set_xlim(0, top * 1.25)
    ax.set_xlabel("rows flagged")
    ax.tick_params(axis="y", length=0)
    return _png(fig)


def chart_noise_matrix(noise: list[tuple[str, str, int]]) -> Chart | None:
    """Given label (rows) x suggested label (columns), counts of label issues, as a heatmap."""
    if not noise:
        return None
    import numpy as np

    plt = pyplot()
    weight: dict[str, int] = {}
    for g, s, n in noise:
        weight[g] = weight.get(g, 0) + n
        weight[s] = weight.get(s, 0) + n
    classes = sorted(sorted(weight), key=lambda c: -weight[c])[:MATRIX_CLASSES]
    classes = sorted(classes, key=_natural)
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=int)
    for g, s, n in noise:
        if g in index and s in index:
            m[index[g], index[s]] += n
    size = min(4.6, max(3.0, 1.4 + 0.34 * len(classes)))
    fig, ax = plt.subplots(figsize=(size + 0.8, size))
    im = ax.imshow(m, cmap="Reds", vmin=0)
    ax.set_xticks(range(len(classes)), classes, rotation=45 if len(classes) > 6 else 0,
                  ha="right" if len(classes) > 6 else "center")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("suggested label")
    ax.set_ylabel("given label")
    ax.spines[:].set_visible(False)
    peak = m.max() or 1
    for i in range(len(classes)):
        for j in range(len(classes)):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if m[i, j] > peak * 0.55 else INK)
    fig.colorbar(im, ax=ax, shrink=0.7, label="label issues")
    return _png(fig)


def _natural(value: str) -> tuple:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def chart_scores(histograms: dict[str, dict], types: list[str]) -> Chart | None:
    """Score histograms, one panel per type: flagged rows in red, the cut-off dashed."""
    if not types:
        return None
    plt = pyplot()
    cols = min(4, len(types))
    nrows = math.ceil(len(types) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.9 * max(cols, 3), 2.2 * nrows),
                             squeeze=False)
    width = 1 / BINS
    lefts = [i * width for i in range(BINS)]
    for ax, t in zip(axes.flat, types, strict=False):
        h = histograms[t]
        ax.bar(lefts, h["other"], width=width, align="edge", color=MUTED, label="not flagged")
        ax.bar(lefts, h["flagged"], width=width, align="edge", bottom=h["other"], color=RED,
               label="flagged")
        if h["cut"] is not None:
            ax.axvline(h["cut"], color=INK, ls="--", lw=1)
            ax.text(h["cut"], 1.0, f" {h['cut']:.2f}", transform=ax.get_xaxis_transform(),
                    va="top", fontsize=7.5, color=INK)
        ax.set_title(t.replace("_", " "), loc="left")
        ax.set_xlim(0, 1)
        totals = [a + b for a, b in zip(h["other"], h["flagged"], strict=True)]
        if max(totals) > 0.6 * (sum(totals) or 1):  # one bin dwarfs the rest: keep all visible
            ax.set_yscale("symlog")
            ax.set_ylabel("rows (log)", fontsize=7.5)
    for ax in list(axes.flat)[len(types):]:
        ax.set_visible(False)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, frameon=False, fontsize=8, loc="lower right", ncols=2,
               bbox_to_anchor=(1, 0.98))
    fig.supxlabel("score (lower = more likely a problem)", fontsize=8.5)
    fig.tight_layout()
    return _png(fig)


def chart_slices(slices: list[dict], top: int = 12) -> Chart | None:
    """The slice values with the highest label-issue rate, with their 95% intervals and the
    rest's rate marked; flagged values in red."""
    tested = [s for s in slices if s.get("issue_rate") is not None][:top]
    if not tested:
        return None
    plt = pyplot()
    tested = tested[::-1]
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.28 * len(tested)))
    ys = range(len(tested))
    for y, s in zip(ys, tested, strict=True):
        colour = RED if s.get("is_flagged") else MUTED
        low, high, rate = s["issue_rate_low"], s["issue_rate_high"], s["issue_rate"]
        ax.plot([low, high], [y, y], color=colour, lw=2)
        ax.plot([rate], [y], "o", color=colour, ms=5)
        if s.get("rest_issue_rate") is not None:
            ax.plot([s["rest_issue_rate"]], [y], "|", color="#333333", ms=10)
    ax.set_yticks(list(ys), [f"{s['slice_column']} = {s['slice_value']}" for s in tested],
                  fontsize=8)
    ax.set_xlabel("label-issue rate (95% interval; | = the rest of the data)", fontsize=8)
    ax.set_xlim(0, min(1.0, max(s["issue_rate_high"] for s in tested) * 1.15 + 0.01))
    return _png(fig)


def chart_drift(batch: dict) -> Chart | None:
    """One batch's drift per column against the dataset: each drift check's effect as a share
    of its threshold (1 = the threshold; beyond it, warned or failed checks in amber / red)."""
    drift = [c for c in batch.get("drift", ()) if c["threshold"]]
    if not drift:
        return None
    plt = pyplot()
    drift = drift[::-1]
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.26 * len(drift)))
    ratios = [c["effect_size"] / c["threshold"] for c in drift]
    colours = [{"fail": RED, "warn": AMBER}.get(c["outcome"], BLUE) for c in drift]
    ax.barh(range(len(drift)), ratios, color=colours)
    ax.axvline(1.0, color=INK, lw=1, ls="--")
    ax.set_yticks(range(len(drift)), [f"{c['column_name']} ({c['check_name'].split('_')[0]})"
                                      for c in drift], fontsize=8)
    ax.set_xlabel("drift effect / threshold (dashed: the threshold)", fontsize=8)
    return _png(fig)


def chart_evaluation(evaluations: list[dict]) -> Chart | None:
    """Accuracy and macro F1 trained on the given labels vs on the cleaned data."""
    if not evaluations:
        return None
    plt = pyplot()
    groups = sorted({(e.get("model"), e.get("test_set")) for e in evaluations}, key=str)
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.2 + 0.1 * len(groups)), sharey=True)
    for ax, metric in zip(axes, ("accuracy", "macro_f1"), strict=True):
        for k, (trained, colour) in enumerate((("given", MUTED), ("cleaned", GREEN))):
            vals = [next((e.get(metric) for e in evaluations if e.get("trained_on") == trained
                          and (e.get("model"), e.get("test_set")) == g), None) for g in groups]
            ys = [i + (0.2 if k == 0 else -0.2) for i in range(len(groups))]
            ax.barh(ys, [v or 0 for v in vals], height=0.38, color=colour,
                    label=f"trained on {trained} labels")
            for y, v in zip(ys, vals, strict=True):
                if v is not None:
                    ax.text(v, y, f" {v:.3f}", va="center", fontsize=7.5)
        ax.set_xlim(0, 1.15)
        ax.set_title(metric.replace("_", " "), loc="left")
    axes[0].set_yticks(range(len(groups)), [f"{m} / {t}" for m, t in groups])
    axes[0].legend(frameon=False, fontsize=7.5, loc="lower left", bbox_to_anchor=(0, 1.08),
                   ncols=2)
    return _png(fig)


def chart_tag_noise(tags: list[dict], top: int = 20) -> Chart | None:
    """A multilabel run's noise per tag: rows whose tag is likely wrong (red) and rows where it
    is likely missing (amber), the noisiest tags first (at most `top`)."""
    if not tags:
        return None
    plt = pyplot()
    rows = sorted(tags, key=lambda t: -((t.get("n_tags_likely_wrong") or 0)
                                        + (t.get("n_tags_likely_missing") or 0)))[:top][::-1]
    wrong = [t.get("n_tags_likely_wrong") or 0 for t in rows]
    missing = [t.get("n_tags_likely_missing") or 0 for t in rows]
    names = [str(t["class_name"]) for t in rows]
    fig, ax = plt.subplots(figsize=(5.6, 0.3 * len(rows) + 0.9))
    ax.barh(names, wrong, color=RED, label="likely wrong (tagged, should not be)")
    ax.barh(names, missing, left=wrong, color=AMBER, label="likely missing (should be tagged)")
    for i, t in enumerate(rows):
        noise = t.get("label_noise")
        if noise is not None and noise == noise:
            ax.text(wrong[i] + missing[i], i, f" {noise:.1%} of {t['n_rows']:,}", va="center",
                    fontsize=8, color=INK)
    ax.set_xlim(0, max(1, max(w + m for w, m in zip(wrong, missing, strict=True))) * 1.35)
    ax.set_xlabel("rows")
    ax.tick_params(axis="y", length=0)
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    return _png(fig)


def chart_regression(points: dict[str, list] | None) -> Chart | None:
    """Predicted (out of fold) against given values, flagged rows in red, and the residual
    distribution (given - predicted)."""
    if not points or not points["given"]:
        return None
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.4, 3.0))
    flagged = points["flagged"]
    for is_flagged, colour, name in ((False, MUTED, "not flagged"), (True, RED, "label issue")):
        xs = [g for g, f in zip(points["given"], flagged, strict=True) if f == is_flagged]
        ys = [p for p, f in zip(points["predicted"], flagged, strict=True) if f == is_flagged]
        left.scatter(xs, ys, s=8 if is_flagged else 5, color=colour, label=name,
                     alpha=0.9 if is_flagged else 0.5, linewidths=0)
    low = min(min(points["given"]), min(points["predicted"]))
    high = max(max(points["given"]), max(points["predicted"]))
    left.plot([low, high], [low, high], color=INK, lw=0.8, ls="--")
    left.set_xlabel("given value", fontsize=8.5)
    left.set_ylabel("predicted (out of fold)", fontsize=8.5)
    left.set_title("predicted vs given", loc="left")
    left.legend(frameon=False, fontsize=7.5)
    right.hist(points["residual"], bins=40, color=MUTED)
    right.axvline(0, color=INK, lw=0.8, ls="--")
    right.set_xlabel("residual: given - predicted", fontsize=8.5)
    right.set_ylabel("rows", fontsize=7.5)
    right.set_title("residuals", loc="left")
    fig.tight_layout()
    return _png(fig)


# ---------------------------------------------------------------------------- rendering
