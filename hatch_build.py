"""Packaging: the wheel holds one top-level package, `cleanset`, never `flows` or `tasks`.

The repository keeps its layout (flows/, tasks/ and cleanset/ side by side; code imports
`from tasks.x import ...`, `from flows.x import ...`), and an editable install (`uv sync`) puts
the checkout on the path as before. Building the wheel, this hook copies flows/ and tasks/ into
cleanset/flows/ and cleanset/tasks/ and rewrites each `from tasks...` / `from flows...` import to
`from cleanset.tasks...` / `from cleanset.flows...` (in cleanset/ too), so installing cleanset
cannot shadow a user's own `tasks` or `flows` module. tests/test_packaging.py builds the wheel
and checks its top-level names and that it imports on its own.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PACKAGES = ("cleanset", "flows", "tasks")  # repo folders; the last two go under cleanset/
FROM_IMPORT = re.compile(r"^(\s*)from (flows|tasks)(?=[.\s])", re.MULTILINE)
PLAIN_IMPORT = re.compile(r"^\s*import (flows|tasks)\b", re.MULTILINE)


def rewrite(source: str, where: str) -> str:
    """`from tasks.x import y` -> `from cleanset.tasks.x import y` (the same for flows). A plain
    `import tasks.x` would leave its name unbound after a rewrite: refused, naming the file."""
    if PLAIN_IMPORT.search(source):
        raise ValueError(f"{where}: write `from tasks... import ...` (or flows): a plain "
                         "`import tasks...` cannot be rewritten for the wheel")
    return FROM_IMPORT.sub(r"\1from cleanset.\2", source)


class CustomBuildHook(BuildHookInterface):
    """Supplies every file of the standard wheel (the wheel target bypasses file selection)."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version != "standard":
            return  # the editable install uses the checkout itself (dev-mode-dirs)
        self._tmp = Path(tempfile.mkdtemp(prefix="cleanset-wheel-"))
        root = Path(self.root)
        for name in PACKAGES:
            dest = self._tmp / ("cleanset" if name == "cleanset" else f"cleanset/{name}")
            shutil.copytree(root / name, dest, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for path in sorted((self._tmp / "cleanset").rglob("*.py")):
            path.write_text(rewrite(path.read_text(encoding="utf-8"), str(path)),
                            encoding="utf-8")
        build_data["force_include"][str(self._tmp / "cleanset")] = "cleanset"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
