"""Rewrite the corpus section of bench/results/faults_and_corpus.md from tests/test_corpus.py's
CASES (the faults section above it is written by hand from tests/test_faults.py).

    uv run --frozen python bench/faults_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_corpus import CASES  # noqa: E402

OUT = ROOT / "bench" / "results" / "faults_and_corpus.md"


def main() -> None:
    text = OUT.read_text()
    head, rest = text.split("## Bad-input corpus", 1)
    tail = rest[rest.index("\nFound and fixed"):]
    lines = [f"## Bad-input corpus (tests/test_corpus.py, {len(CASES)} cases)", "",
             "| # | input | outcome |", "| --- | --- | --- |"]
    for i, c in enumerate(CASES, 1):
        out = c.outcome if not c.rejected else f"{c.outcome} (message contains `{c.needle}`)"
        lines.append(f"| {i} | {c.name} | {out} |")
    OUT.write_text(head + "\n".join(lines) + "\n" + tail)


if __name__ == "__main__":
    main()
