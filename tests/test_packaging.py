"""The wheel plays well with others: its only top-level package is `cleanset` (flows/ and tasks/
go under it, imports rewritten by hatch_build.py), and the installed wheel works on its own,
without the checkout on the path and without putting `tasks` or `flows` there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds a wheel and starts processes

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL_IMPORT = re.compile(r"^\s*(from|import) (tasks|flows)\b", re.MULTILINE)


def _uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(found).is_file():
        pytest.skip("uv is not installed (make setup bootstraps it into .tools/)")
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([_uv(), "build", "--wheel", "--out-dir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = out.glob("cleanset-*.whl")
    return built


def test_wheel_has_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"cleanset", wheel.name.split("-py3")[0]
                                                + ".dist-info"}
    assert "cleanset/tasks/templates/report.html.j2" in names
    assert "cleanset/flows/clean.py" in names and not any("__pycache__" in n for n in names)
    for name in names:
        if name.endswith(".py"):
            text = zipfile.ZipFile(wheel).read(name).decode()
            assert not TOP_LEVEL_IMPORT.search(text), f"{name} imports a top-level flows/tasks"
    clean = zipfile.ZipFile(wheel).read("cleanset/flows/clean.py").decode()
    assert "from cleanset.tasks.publish import" in clean
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "cleanset = cleanset.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installed_wheel_works_without_the_checkout(wheel, tmp_path):
    """Installed into a fresh venv (no dependencies: those come from the project's own
    site-packages, added as a plain path, so its editable .pth - the checkout - is not read),
    run from a folder outside the repo."""
    uv = _uv()
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([uv, "pip", "install", "-q", "--offline", "--no-deps", "--python", str(py),
                    str(wheel)], check=True, timeout=120)
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (
        "import importlib.util, sys\n"
        "import cleanset, cleanset.flows.cli, cleanset.flows.clean, cleanset.tasks.report\n"
        "from cleanset.tasks.caching import TASKS_DIR, code_hash\n"
        f"assert cleanset.__file__.startswith({str(site)!r}), cleanset.__file__\n"
        "assert TASKS_DIR.name == 'tasks' and TASKS_DIR.parent.name == 'cleanset' and code_hash()\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('tasks', 'flows')]\n"
        "assert importlib.util.find_spec('tasks') is None\n"
        "assert importlib.util.find_spec('flows') is None\n"
        "print('ok')\n")
    proc = subprocess.run([str(py), "-c", code], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
    proc = subprocess.run([str(venv / "bin" / "cleanset"), "review", "--help"], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "[k]eep" in proc.stdout, proc.stderr[-3000:]
