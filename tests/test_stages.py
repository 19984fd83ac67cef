"""Every stage is declared through tasks.caching.stage, none retries a user error, and the cache
key covers every file under tasks/ and the versions of the libraries that compute results."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest
from prefect import Task

import tasks
from tasks import caching
from tasks.errors import is_retryable

TASKS_DIR = Path(tasks.__file__).parent


def all_tasks() -> dict[str, Task]:
    """Every Prefect task defined in a module under tasks/ (sub-packages included)."""
    found = {}
    for info in pkgutil.walk_packages([str(TASKS_DIR)], prefix="tasks."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, Task) and value.fn.__module__ == module.__name__:
                found[f"{info.name}.{name}"] = value
    return found


def test_every_task_is_a_stage_and_never_retries_a_user_error():
    found = all_tasks()
    assert len(found) >= 17, sorted(found)
    for where, t in found.items():
        assert getattr(t, "cleanset_stage", False), f"{where}: declare it with tasks.caching.stage"
        assert t.retry_condition_fn is is_retryable, where
    # and no module declares a task any other way
    for path in TASKS_DIR.rglob("*.py"):
        assert not re.search(r"^\s*@task\b", path.read_text(), re.M), path


def test_stage_defaults_and_overrides():
    declared = caching.stage("x")(lambda: None)
    assert (declared.name, declared.retries, declared.retry_delay_seconds) == ("x", 2, 2)
    assert declared.cache_policy is caching.STAGE_CACHE
    uncached = caching.stage("y", cache_policy=caching.NO_CACHE, retries=3)(lambda: None)
    assert uncached.retries == 3 and uncached.retry_condition_fn is is_retryable
    with pytest.raises(TypeError, match="never retried"):
        caching.stage("z", retry_condition_fn=lambda *a: True)


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_code_hash_covers_sub_packages_and_templates(tmp_path, monkeypatch):
    _tree(tmp_path, {"a.py": "x = 1", "sub/b.py": "y = 2", "templates/r.html.j2": "<p>"})
    monkeypatch.setattr(caching, "TASKS_DIR", tmp_path)
    code_hash = caching.code_hash.__wrapped__
    before = code_hash()
    for name in ("sub/b.py", "templates/r.html.j2"):
        (tmp_path / name).write_text("changed")
        assert code_hash() != before, name
        before = code_hash()
    (tmp_path / "sub" / "__pycache__").mkdir()
    (tmp_path / "sub" / "__pycache__" / "b.cpython-312.pyc").write_bytes(b"\0")
    assert code_hash() == before


def test_cache_key_holds_library_versions(monkeypatch):
    versions = caching.library_versions()
    assert set(versions) == set(caching.LIBRARIES)
    assert versions["cleanlab"] != "absent" and versions["cleanset"] != "absent"
    key = caching._code_key(None, {})
    monkeypatch.setattr(caching, "library_versions", lambda: {**versions, "cleanlab": "9.9"})
    assert caching._code_key(None, {}) != key
