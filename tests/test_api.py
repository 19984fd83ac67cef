"""cleanset.clean, the Python entry point: the real flow on small frames, under the session's
temporary Prefect server (tests/conftest.py), real DuckDB, GX and cleanlab."""

from __future__ import annotations

import asyncio

import duckdb
import numpy as np
import pandas as pd
import pytest
from prefect.client.orchestration import get_client

import cleanset
from cleanset.api import frame_file
from tasks.errors import CleansetError
from tasks.sample import plant_noise
from tests.conftest import blobs
from tests.test_flow import task_states


@pytest.fixture()
def noisy_blobs() -> tuple[pd.DataFrame, np.ndarray]:
    frame = blobs(n=240, k=3, d=4, seed=1)
    noisy, mask = plant_noise(frame["label"].to_numpy(), 0.1, seed=0)
    frame["label"] = noisy
    return frame, mask


@pytest.mark.usefixtures("prefect_server")
def test_clean_a_dataframe_then_again_from_cache(noisy_blobs, workdir):
    frame, mask = noisy_blobs
    db = workdir / "w.duckdb"
    result = cleanset.clean(frame, label="label", db=str(db), model="logreg")

    s = result.summary
    assert result.run_id == s.run_id and s.dataset == "dataframe" and s.n_rows == len(frame)
    # one issues row per input row, in input order
    issues = result.issues
    assert len(issues) == len(frame)
    assert issues["row_id"].astype(int).tolist() == list(range(len(frame)))
    assert issues["given_label"].tolist() == frame["label"].tolist()
    found = issues["is_label_issue"].to_numpy(dtype=bool)
    assert (found & mask).sum() >= 0.8 * mask.sum()  # well separated blobs: flips are findable
    # the clean frame is the kept rows (row_id added, label_original beside the label)
    kept = issues.loc[issues["action"] != "drop", "row_id"].astype(int).tolist()
    assert len(kept) == s.n_clean_rows < len(frame)
    assert result.clean["row_id"].astype(int).tolist() == kept
    assert {*frame.columns, "row_id", "label_original"} == set(result.clean.columns)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM dataframe_clean").fetchall()[0][0] == len(kept)
    with get_client(sync_client=True) as client:  # the run is on the Prefect server (its UI)
        flow_run = client.read_flow_run(result.flow_run_id)
    assert flow_run.name == "clean-dataframe" and flow_run.state.is_completed()
    # the frame became a content-addressed Parquet file under the work folder
    assert [p.parent.name for p in (workdir / "work" / "frames").glob("*.parquet")] == ["frames"]
    assert result.report_path is not None and result.report_path.exists()

    page = result._repr_html_()
    for figure in (f"{len(frame):,}", f"{s.n_clean_rows:,}", f"{s.n_label_issues:,}",
                   f"{len(frame) - s.n_clean_rows:,} dropped", "model check",
                   f"{s.model_check['model_accuracy']:.3f}", f"{s.health_score:.3f}",
                   result.report_path.resolve().as_uri(), s.run_id):
        assert figure in page, figure
    assert "CleanResult(dataset='dataframe'" in repr(result)

    # the same frame (a copy): the same file, every cacheable stage from the cache, same run;
    # called inside a running event loop, as a Jupyter cell is
    async def cell() -> cleanset.CleanResult:
        return cleanset.clean(frame.copy(), label="label", db=str(db), model="logreg")

    again = asyncio.run(cell())
    assert again.run_id == result.run_id and again.flow_run_id != result.flow_run_id
    states = task_states(again.flow_run_id)
    for never_cached in ("publish", "load-decisions", "run-artifacts", "retain", "report",
                        "record-stages"):
        assert states.pop(next(n for n in states if n.startswith(never_cached))) == "Completed"
    assert set(states.values()) == {"Cached"}, states
    pd.testing.assert_frame_equal(again.issues, result.issues)
    pd.testing.assert_frame_equal(again.clean, result.clean)


@pytest.mark.usefixtures("prefect_server")
def test_clean_a_path_as_a_dry_run(noisy_blobs, workdir):
    frame, _ = noisy_blobs
    frame.to_csv(workdir / "blobs.csv", index=False)
    result = cleanset.clean(workdir / "blobs.csv", label="label", db=str(workdir / "w.duckdb"),
                            model="logreg", dry_run=True)
    assert result.summary.dataset == "blobs" and not result.summary.auto_fix
    assert len(result.issues) == len(result.clean) == len(frame)  # nothing dropped
    assert set(result.issues["action"]) <= {"keep", "review"}
    assert "dry run: nothing changed" in result._repr_html_()


@pytest.mark.usefixtures("prefect_server")
def test_a_label_column_that_is_not_there_is_a_user_error(noisy_blobs, workdir):
    frame, _ = noisy_blobs
    with pytest.raises(CleansetError, match="'category'"):
        cleanset.clean(frame, label="category", db=str(workdir / "w.duckdb"))


def test_settings_are_checked_before_anything_runs(noisy_blobs, workdir):
    frame, _ = noisy_blobs
    with pytest.raises(CleansetError, match="unknown setting.*lable"):
        cleanset.clean(frame, label="label", lable="y")
    with pytest.raises(CleansetError, match="folds"):
        cleanset.clean(frame, label="label", folds=1)
    with pytest.raises(CleansetError, match="does not exist"):
        cleanset.clean(workdir / "missing.csv", label="label")
    with pytest.raises(CleansetError, match="DataFrame or a path"):
        cleanset.clean([1, 2, 3], label="label")
    assert not (workdir / "data").exists()  # nothing written


def test_frame_file_is_content_addressed(workdir):
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["a", "b", "a"]})
    first = frame_file(frame, workdir / "work")
    assert frame_file(frame.copy(), workdir / "work") == first
    assert frame_file(frame.assign(x=[1.0, 2.0, 4.0]), workdir / "work") != first
    named = frame.set_index(pd.Index([7, 8, 9], name="sku"))
    assert list(pd.read_parquet(frame_file(named, workdir / "work")).columns) == ["sku", "x", "y"]
    with pytest.raises(CleansetError, match="column names must be text"):
        frame_file(pd.DataFrame({0: [1], 1: [2]}), workdir / "work")
