"""How every stage is declared (`stage`) and the one cache policy cached stages use.

Prefect's TASK_SOURCE covers only the decorated function's own lines, not the helpers it calls,
the ref classes it returns or the libraries that compute the result, so a change to any of them
would be served stale results. The key is therefore the task's source, its inputs, a hash of
every file under tasks/ (every module, sub-packages included, and tasks/templates/), and the
installed versions of cleanset and of the libraries that compute results (`LIBRARIES`): any
change to that code or an upgrade recomputes, an unchanged install re-runs from cache. flows/
is not in the key: the tasks import nothing from it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE, CacheKeyFnPolicy, CachePolicy

from tasks import timing
from tasks.errors import is_retryable

TASKS_DIR = Path(__file__).parent
# The distributions whose versions are part of every cache key: they compute the results.
LIBRARIES = ("cleanset", "cleanlab", "scikit-learn", "faiss-cpu", "numpy", "pandas", "duckdb",
             "great-expectations", "scipy", "pyarrow", "prefect")
__all__ = ["NO_CACHE", "STAGE_CACHE", "code_hash", "file_content", "library_versions", "stage"]


@cache
def code_hash() -> str:
    """sha256 over every file under tasks/ (modules in sub-packages and templates included)."""
    h = hashlib.sha256()
    for path in sorted(TASKS_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            h.update(path.relative_to(TASKS_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


@cache
def library_versions() -> dict[str, str]:
    """Installed version of each of LIBRARIES ("absent" when not installed)."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def _code_key(context, parameters) -> str:  # noqa: ANN001 - Prefect's cache_key_fn signature
    # library_versions is looked up at call time, so a test can replace it
    versions = json.dumps(library_versions(), sort_keys=True)
    return hashlib.sha256(f"{code_hash()}|{versions}".encode()).hexdigest()


STAGE_CACHE = TASK_SOURCE + INPUTS + CacheKeyFnPolicy(cache_key_fn=_code_key)


def stage(name: str, *, cache_policy: CachePolicy = STAGE_CACHE, retries: int = 2,
          retry_delay_seconds: float | list[float] = 2, timed: bool = True,
          **overrides: Any) -> Callable:
    """The decorator for every stage: a Prefect task with the stage cache (or `NO_CACHE` for the
    stages that read or write the warehouse), 2 retries 2 s apart, and never a retry of a user
    error (`is_retryable`: a CleansetError fails the same way every time). Each call that runs
    records its seconds and memory for the run's stage timings (tasks/timing.py) unless
    `timed` is False."""
    if "retry_condition_fn" in overrides:
        raise TypeError("stage(): user errors are never retried; retry_condition_fn is fixed")

    def decorate(fn: Callable) -> Any:
        declared = task(name=name, cache_policy=cache_policy, retries=retries,
                        retry_delay_seconds=retry_delay_seconds,
                        retry_condition_fn=is_retryable, **overrides)(
                            timing.timed(name, fn) if timed else fn)
        declared.cleanset_stage = True  # tests/test_stages.py: every task comes through here
        return declared

    return decorate


def file_content(*parameters: str) -> CacheKeyFnPolicy:
    """Cache key part: the bytes of the files named by these task parameters (None is skipped)."""
    from tasks.store import file_sha256

    def key(context, params) -> str:  # noqa: ANN001
        parts = []
        for name in parameters:
            path = params.get(name)
            parts.append(file_sha256(path) if path and Path(path).is_file() else str(path))
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    return CacheKeyFnPolicy(cache_key_fn=key)
