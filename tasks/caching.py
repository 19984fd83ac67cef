"""The one cache policy every cached stage uses.

Prefect's TASK_SOURCE covers only the decorated function's own lines, not the helpers it calls
or the ref classes it returns, so a change to, say, the model pipeline would be served stale
results. The key is therefore the task's source, its inputs, and a hash of every module directly
in tasks/ (tasks/*.py): any change to that code recomputes, an unchanged install re-runs from
cache. Not in the key: cleanset's version number (only the run id carries it), the versions of
the libraries that compute the results (cleanlab, scikit-learn, ...; after upgrading them, run
with --refresh), and files in sub-folders of tasks/ (templates/ only shapes the report, which is
not cached).
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from prefect.cache_policies import INPUTS, TASK_SOURCE, CacheKeyFnPolicy


@cache
def code_hash() -> str:
    """sha256 over the source of every module in tasks/."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _code_key(context, parameters) -> str:  # noqa: ANN001 - Prefect's cache_key_fn signature
    return code_hash()


STAGE_CACHE = TASK_SOURCE + INPUTS + CacheKeyFnPolicy(cache_key_fn=_code_key)


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
