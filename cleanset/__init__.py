"""cleanset from Python: `cleanset.clean(df_or_path, label="y")` runs the cleaning flow and
returns a `CleanResult` (issues and clean rows as DataFrames, the run summary, the report)."""

from cleanset.api import CleanResult, clean

__all__ = ["CleanResult", "clean"]
