"""Stage timings: each stage's seconds and memory, in the warehouse, the run summary artifact and
the CLI, against the previous run of the same dataset."""

from __future__ import annotations

import duckdb
import pytest

from tasks.timing import (
    MIN_COMPARED,
    MODEL_STAGES,
    OVERHEAD,
    StageCall,
    compare,
    peak_rss,
    stage_lines,
    stage_rows,
    stages_markdown,
    totals,
)

MIB = 1024 * 1024


def call(stage: str, a: float, b: float, rss: int = 100, peak: int = 200) -> StageCall:
    return StageCall(stage, a, b, rss * MIB, peak * MIB)


def test_parallel_calls_count_once_and_the_rest_is_overhead():
    calls = [call("ingest", 0, 1), call("estimate-fold", 1, 4, peak=300),
             call("estimate-fold", 2, 5, rss=150, peak=350), call("detect", 6, 7)]
    rows = stage_rows(calls, flow_started=-1.0, flow_ended=8.0)
    by = {r["stage"]: r for r in rows}
    assert [r["stage"] for r in rows] == ["ingest", "estimate-fold", "detect", OVERHEAD]
    assert by["estimate-fold"]["seconds"] == pytest.approx(4.0)  # union of [1,4] and [2,5]
    assert by["estimate-fold"]["busy_seconds"] == pytest.approx(6.0)
    assert by["estimate-fold"]["calls"] == 2
    assert by["estimate-fold"]["rss_mib"] == pytest.approx(150)  # at the last call's end
    assert by["estimate-fold"]["peak_rss_mib"] == pytest.approx(350)
    assert by["estimate-fold"]["model_stage"] and not by["detect"]["model_stage"]
    assert by[OVERHEAD]["seconds"] == pytest.approx(9.0 - 6.0)  # 1 + 4 + 1 covered of 9
    t = totals(rows)
    assert t["seconds"] == pytest.approx(9.0)
    assert t["model_seconds"] == pytest.approx(4.0)
    assert t["other_share"] == pytest.approx(5 / 9)
    assert t["peak_rss_mib"] == pytest.approx(350)


def test_compare_gives_the_ratio_against_the_previous_run():
    now = stage_rows([call("knn", 0, 2), call("detect", 2, 3), call("audit-batch", 3, 4)])
    before = stage_rows([call("knn", 0, 4), call("audit-batch", 4, 4.0003)])
    rows = compare(now, before)
    assert rows[0]["previous_seconds"] == pytest.approx(4.0)
    assert rows[0]["ratio"] == pytest.approx(0.5)
    assert rows[1]["ratio"] is None  # did not run before
    assert rows[2]["ratio"] is None  # next to nothing before (a first batch's audit): no ratio
    text = stages_markdown(rows, "d", "r1", "r0")
    assert "| knn | 1 | 2.00 |" in text and "0.50x" in text and "`r0`" in text
    lines = stage_lines(rows, top=1)
    assert lines[0] == "knn 2.0 s (0.50x of previous)"
    assert "rest 4.0 s (100%)" in lines[-1]


def test_memory_is_read_from_the_process():
    assert peak_rss() > 10 * MIB
    assert "estimate-fold" in MODEL_STAGES


@pytest.mark.usefixtures("prefect_server")
def test_a_run_records_every_stage_and_a_second_run_compares(workdir):
    from flows.clean import clean_dataset
    from tasks.sample import load_builtin, plant_noise
    from tasks.spec import DatasetSpec

    frame = load_builtin("wine")
    frame["label"], _ = plant_noise(frame["label"].to_numpy(), 0.1, seed=0)
    frame.to_csv(workdir / "wine.csv", index=False)
    spec = DatasetSpec(source=str(workdir / "wine.csv"), label="label",
                       db=str(workdir / "w.duckdb"))
    first = clean_dataset(spec)
    ran = {r["stage"] for r in first.stages}
    # (the kNN model wins on wine: no estimate-fold fits)
    assert {"ingest", "validate", "load-decisions", "featurize", "knn", "choose-model",
            "pred-probs", "check-model", "detect", "decide", "publish", "run-artifacts",
            "retain", "report", OVERHEAD} <= ran, ran
    with duckdb.connect(spec.db, read_only=True) as con:
        rows = con.execute("SELECT stage, seconds, rss_mib, peak_rss_mib, run_id FROM run_stages "
                           "WHERE stage <> ? ORDER BY position", [OVERHEAD]).fetchall()
    assert {r[0] for r in rows} == ran - {OVERHEAD}
    for stage, seconds, rss, peak, run_id in rows:
        assert seconds > 0 and rss > 0 and peak >= rss, (stage, seconds, rss, peak)
        assert run_id == first.run_id
    assert all(r["previous_seconds"] is None for r in first.stages)

    second = clean_dataset(spec, refresh=True)  # same run id, every stage runs again
    assert second.run_id == first.run_id
    earlier = {r["stage"]: r["seconds"] for r in first.stages}
    for r in second.stages:
        if r["stage"] == OVERHEAD:
            continue
        assert r["previous_seconds"] == pytest.approx(earlier[r["stage"]]), r
        if earlier[r["stage"]] >= MIN_COMPARED:  # the ratio, except against next to nothing
            assert r["ratio"] == pytest.approx(r["seconds"] / earlier[r["stage"]]), r
        else:
            assert r["ratio"] is None, r
    assert any(r["ratio"] is not None for r in second.stages)
    with duckdb.connect(spec.db, read_only=True) as con:
        assert con.execute("SELECT count(DISTINCT flow_run_id) FROM run_stages").fetchall() == [
            (2,)]
