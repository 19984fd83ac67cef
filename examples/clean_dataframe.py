"""cleanset from Python, notebook style: clean a DataFrame with planted label errors.

Run: uv run python examples/clean_dataframe.py   (publishes into data/warehouse.duckdb)
In Jupyter, run the same cells and end one with `result` to see its summary table.
"""

import numpy as np
from sklearn.datasets import load_wine

import cleanset

# %% a labelled table with 10% of its labels flipped
df = load_wine(as_frame=True).frame.rename(columns={"target": "label"})
rng = np.random.default_rng(0)
flipped = rng.random(len(df)) < 0.1
df.loc[flipped, "label"] = (df.loc[flipped, "label"] + rng.integers(1, 3, flipped.sum())) % 3

# %% clean it: the same flow as `cleanset run`, every stage cached
result = cleanset.clean(df, label="label", dataset="wine_example")
print(result)

# %% which rows were flagged, and did we find the planted flips?
issues = result.issues
found = issues["is_label_issue"].to_numpy(dtype=bool)
print(f"label issues: {found.sum()}, of them planted: {(found & flipped).sum()} "
      f"of {flipped.sum()} planted")
print(issues.loc[found, ["row_id", "given_label", "suggested_label", "label_score", "action"]]
      .sort_values("label_score").head())

# %% the clean rows, as in the warehouse's wine_example_clean table
print(f"clean: {len(result.clean)} of {len(df)} rows; report: {result.report_path}")
