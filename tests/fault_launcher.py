"""Test-only launcher: the real `cleanset` CLI in this process, with a fault planted from outside
(nothing in flows/ or tasks/ knows about it). FAULT_STAGE=estimate makes every fold fit hang,
FAULT_STAGE=publish makes publish hang just before COMMIT (every row already inserted); both
write FAULT_MARKER first, so the test knows when to SIGKILL the process.

    python -m tests.fault_launcher run data.csv --label label --db wh.duckdb
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def _hang(marker: Path, stage: str) -> None:
    marker.write_text(stage)
    time.sleep(600)


def plant(stage: str, marker: Path) -> None:
    if stage == "estimate":
        import tasks.estimate as estimate

        def fit_predict_fold(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            _hang(marker, stage)

        estimate.fit_predict_fold = fit_predict_fold
    elif stage == "publish":
        import tasks.publish as publish

        real_connect = publish.connect

        class HangBeforeCommit:
            def __init__(self, con) -> None:  # noqa: ANN001
                self._con = con

            def execute(self, sql, *args):  # noqa: ANN001, ANN002, ANN202
                if sql.strip().upper() == "COMMIT":
                    _hang(marker, stage)
                return self._con.execute(sql, *args)

            def __getattr__(self, name):  # noqa: ANN001, ANN204
                return getattr(self._con, name)

        publish.connect = lambda *a, **k: HangBeforeCommit(real_connect(*a, **k))
    else:
        raise SystemExit(f"unknown FAULT_STAGE {stage!r}")


if __name__ == "__main__":
    plant(os.environ["FAULT_STAGE"], Path(os.environ["FAULT_MARKER"]))
    from flows.cli import app

    sys.argv = ["cleanset", *sys.argv[1:]]
    app()
