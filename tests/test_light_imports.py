"""`cleanset --help` and `cleanset review ...` import neither the stages' libraries nor Prefect:
learning the word "drop" or recording a decision must not cost seconds of scikit-learn, cleanlab,
scipy, matplotlib and Prefect imports. Each check runs in a fresh interpreter (the test process
has imported everything already)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from tests.warehouse import publish_parts, run_parts

pytestmark = pytest.mark.slow  # each test starts a Python process

HEAVY = ("sklearn", "cleanlab", "scipy", "matplotlib", "prefect")
ROOT = Path(__file__).resolve().parents[1]


def heavy_modules_after(commands: list[list[str]], cwd: Path) -> list[str]:
    """Run `cleanset <command>` for each command in one fresh interpreter, in-process (as the
    console script does); return the heavy top-level modules it imported."""
    code = (
        "import json, sys\n"
        "from flows.cli import app\n"
        f"for args in {commands!r}:\n"
        "    try:\n"
        "        app(args, prog_name='cleanset', standalone_mode=False)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), (args, exc.code)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ,
                                                       "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_imports_nothing_heavy(tmp_path):
    assert heavy_modules_after([["--help"], ["review", "--help"], ["run", "--help"]],
                               tmp_path) == []


def test_review_export_and_apply_import_nothing_heavy(tmp_path):
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "label": ["a", "a", "b", "b"]})
    db = tmp_path / "w.duckdb"
    publish_parts(db, "r1", "data", run_parts(tmp_path, frame))
    filled = tmp_path / "filled.csv"
    filled.write_text("row_id,decision,new_label,note\n0,keep,,looks right\n1,relabel,b,\n")
    loaded = heavy_modules_after([
        ["review", "--db", str(db)],  # the interactive review (nothing queued here)
        ["review", "export", "--db", str(db), "--out", str(tmp_path / "queue.csv")],
        ["review", "apply", str(filled), "--db", str(db), "--reviewer", "ann"],
    ], tmp_path)
    assert loaded == []
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT row_id, decision, new_label, reviewer FROM review_decisions "
                           "ORDER BY row_id").fetchall()
    assert rows == [("0", "keep", None, "ann"), ("1", "relabel", "b", "ann")]
    assert (tmp_path / "queue.csv").is_file()


def test_a_typo_is_answered_before_anything_heavy_is_imported(tmp_path):
    """`cleanset run data.csv --label typo` (or a missing file, a bad --config key, a misspelt
    --feature) is answered from the file's header: no Prefect server, no scikit-learn, cleanlab,
    pandas or DuckDB import (issue 18: a typo took 8 s; bench/fixed_cost.py has the seconds)."""
    pd.DataFrame({"x0": [0.0, 1.0], "x1": [1.0, 0.0], "label": ["a", "b"]}).to_csv(
        tmp_path / "data.csv", index=False)
    pd.DataFrame({"x0": [0.0, 1.0], "label": ["a", "b"]}).to_parquet(tmp_path / "data.parquet")
    (tmp_path / "bad.yaml").write_text("labl: label\n")
    cases = {
        "label typo": (["data.csv", "--label", "lable"],
                       "--label column 'lable' is not in data.csv; did you mean 'label'?"),
        "feature typo": (["data.parquet", "--label", "label", "--feature", "x0,x9"],
                         "--feature column 'x9' is not in data.parquet"),
        "missing file": (["nope.csv", "--label", "label"], "input file nope.csv does not exist"),
        "bad config key": (["data.csv", "--config", "bad.yaml"], "labl: Extra inputs"),
    }
    heavy = (*HEAVY, "pandas", "duckdb", "great_expectations")
    for case, (args, needle) in cases.items():
        code = (
            "import sys\n"
            "from flows.cli import app\n"
            f"code = app(['run', *{args!r}], prog_name='cleanset', standalone_mode=False)\n"
            "print('exit', code)\n"
            f"print('heavy', sorted(m for m in {heavy!r} if m in sys.modules))\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
        output = proc.stdout + proc.stderr
        assert needle in output, (case, output)
        assert "available columns" in output or "typo" not in case, (case, output)
        assert "exit 2" in output and "heavy []" in output, (case, output)
        assert "Traceback" not in output, (case, output)


def test_validation_imports_gx_without_sqlalchemy_and_altair(tmp_path):
    """`validate` imports Great Expectations without the parts cleanset does not use: SQLAlchemy
    (GX's SQL data sources, an optional extra) is not imported and Altair (the KL-divergence
    renderer's charts) only on first use; the outcomes are GX's all the same, and both still
    import normally afterwards (issue 18: seconds of a 1,000-row run)."""
    code = (
        "import json, sys\n"
        "import pandas as pd\n"
        "from tasks.validate import check\n"
        "df = pd.DataFrame({'id': [1, 2, 2, 4], 'x': [0.5, None, 2.0, 3.0],\n"
        "                   'label': ['a', 'b', 'a', 'b']})\n"
        "suite = {'name': 'own', 'expectations': [\n"
        "    {'type': 'expect_column_values_to_not_be_null', 'kwargs': {'column': 'x'},\n"
        "     'severity': 'warning'},\n"
        "    {'type': 'expect_column_values_to_be_between',\n"
        "     'kwargs': {'column': 'x', 'min_value': 0, 'max_value': 2.5}, 'severity': 'info'}]}\n"
        "outcomes, bad = check(df, 'label', None, ['x'], suite)\n"
        "loaded = {m: type(sys.modules.get(m)).__name__ for m in ('sqlalchemy', 'altair')}\n"
        "import altair, sqlalchemy\n"
        "print(json.dumps({'loaded': loaded, 'bad': bad.tolist(), 'chart': altair.Chart.__name__,\n"
        "                  'sa': sqlalchemy.__name__,\n"
        "                  'outcomes': [[o.expectation, o.success, o.unexpected_count]\n"
        "                               for o in outcomes]}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == {"sqlalchemy": "NoneType", "altair": "_Deferred"}
    assert out["chart"] == "Chart" and out["sa"] == "sqlalchemy"
    assert out["bad"] == [1]  # the null x: a failed warning-level row expectation
    assert sorted(out["outcomes"], key=str) == sorted([
        ["expect_column_to_exist", True, None], ["expect_column_to_exist", True, None],
        ["expect_column_values_to_not_be_null", True, 0],
        ["expect_column_unique_value_count_to_be_between", True, None],
        ["expect_column_values_to_not_be_null", False, 1],
        ["expect_column_values_to_be_between", False, 1]], key=str)
