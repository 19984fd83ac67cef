"""landing: notice new, complete data files in a landing folder, once per content.

A file counts as arrived when it has a supported data suffix (not a temporary one such as .part
or .tmp), is not hidden, is non-empty, and its size and modification time are the same on two
consecutive polls (a writer still appending changes one of them). Files are identified by their
content sha256, kept in a small JSON state file, so a renamed copy or a restarted watcher does not
announce the same data twice. A seen file is skipped with a reason (`skipped`), except when it was
dropped again (modified after it was announced) and the warehouse's latest run of that content
failed: then it is announced again. `forget` (`cleanset watch --retry FILE`) removes a content
from the state, so the watcher announces it at its next poll. Plain functions: `flows/watch.py`
turns arrivals into Prefect events.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from tasks.sources import _format_of
from tasks.spec import DATASET_FILE, DEFAULT_DB
from tasks.store import file_sha256

EVENT_NAME = "cleanset.file.arrived"
STATE_FILE = ".cleanset-landing.json"
TEMP_SUFFIXES = (".part", ".tmp", ".temp", ".partial", ".crdownload", ".download", ".swp", "~")


@dataclass(frozen=True)
class Arrival:
    """One new complete file: what the event carries."""

    path: str  # absolute
    sha256: str
    size: int
    dataset: str
    retry: bool = False  # seen before; announced again because its last run failed
    folder: str | None = None  # its dataset folder (with a cleanset.yaml); None: unregistered

    def payload(self) -> dict[str, object]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size,
                "dataset": self.dataset, "folder": self.folder}


def dataset_folder_of(path: Path, root: Path) -> Path | None:
    """The dataset folder a landed file belongs to: its folder directly under the landing root
    when that holds a cleanset.yaml; None for a file in the root or in a folder without one."""
    rel = Path(path).absolute().relative_to(Path(root).absolute())
    if len(rel.parts) != 2:  # in the root itself, or deeper than a dataset folder
        return None
    folder = Path(root).absolute() / rel.parts[0]
    return folder if (folder / DATASET_FILE).is_file() else None


def unregistered_why(path: Path, root: Path) -> str:
    rel = Path(path).absolute().relative_to(Path(root).absolute())
    if len(rel.parts) == 1:
        return ("it lies in the landing root, not in a dataset folder: move it into "
                f"{Path(root) / '<dataset>'}/ (with a {DATASET_FILE})")
    folder = Path(root) / rel.parts[0]
    if len(rel.parts) > 2:
        return f"it lies in a sub-folder of {folder}: dataset files lie directly in it"
    return (f"{folder} has no {DATASET_FILE}: write one with `cleanset init {folder} --label "
            "COLUMN`, then run `cleanset run " + f"{folder}/`")


def unregistered_files(root: Path) -> list[tuple[Path, str]]:
    """Data files under the landing root that belong to no dataset folder, and why."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and is_candidate(p)):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if dataset_folder_of(path, root) is None:
            out.append((path, unregistered_why(path, root)))
    return out


def dataset_for(path: Path, root: Path) -> str:
    """The dataset a landed file belongs to: its first sub-folder under the landing root
    (landing/churn/2026-01-02.csv -> churn), or the file's stem when it lies in the root."""
    rel = path.relative_to(root)
    raw = rel.parts[0] if len(rel.parts) > 1 else rel.name.split(".")[0]
    name = re.sub(r"[^A-Za-z0-9_]", "_", raw)[:63] or "dataset"
    return name if name[:1].isalpha() else f"d_{name}"[:63]


def is_candidate(path: Path) -> bool:
    """A data file a writer has finished naming: supported suffix, not hidden, not temporary."""
    name = path.name.lower()
    if name.startswith(".") or name.endswith(TEMP_SUFFIXES):
        return False
    return _format_of(path) is not None


@dataclass
class LandingWatcher:
    """Polls one folder (recursively); `poll()` returns the files that became complete and whose
    content was never seen (or was re-dropped after a failed run); `skipped` holds the seen files
    of the last poll with the reason; `mark_seen()` records arrivals in the state file."""

    root: Path
    state_path: Path | None = None
    db: Path = DEFAULT_DB  # the warehouse consulted for the last run of a re-dropped file
    _last: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (size, mtime_ns)
    _settled: dict[str, tuple] = field(default_factory=dict)  # (size, mtime, registered) hashed
    _digests: dict[str, str] = field(default_factory=dict)  # path -> sha256 when hashed
    seen: dict[str, dict] = field(default_factory=dict)  # sha256 -> {path, at}
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why), last poll

    def __post_init__(self) -> None:
        self.root = Path(self.root).absolute()
        self.state_path = Path(self.state_path) if self.state_path else self.root / STATE_FILE
        self.db = Path(self.db)
        self.seen = load_state(self.state_path)

    def _reload(self) -> None:
        """Pick up `cleanset watch --retry` from another process: a forgotten content is hashed
        and judged again at this poll."""
        before = set(self.seen)
        self.seen = load_state(self.state_path)
        forgotten = before - set(self.seen)
        for key, digest in list(self._digests.items()):
            if digest in forgotten:
                self._settled.pop(key, None)

    def unsettle(self, arrival: Arrival) -> None:
        """Judge this file again at the next poll (its event could not be sent)."""
        self._settled.pop(arrival.path, None)

    def poll(self) -> list[Arrival]:
        """One scan. A file is reported the first poll its (size, mtime) repeats the previous
        poll's, and only if its content hash is new (or it is a retry, see the module doc)."""
        current: dict[str, tuple[int, int]] = {}
        arrivals: list[Arrival] = []
        self.skipped = []
        if not self.root.is_dir():
            return arrivals
        self._reload()
        for path in sorted(p for p in self.root.rglob("*") if p.is_file() and is_candidate(p)):
            if any(part.startswith(".") for part in path.relative_to(self.root).parts):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:  # removed between listing and stat
                continue
            folder = dataset_folder_of(path, self.root)
            # a file is judged again when its folder gains (or loses) its cleanset.yaml
            key, stat = str(path), (st.st_size, st.st_mtime_ns)
            current[key] = stat
            settled = (*stat, folder is not None)
            if st.st_size == 0 or self._last.get(key) != stat or \
                    self._settled.get(key) == settled:
                continue
            self._settled[key] = settled
            digest = file_sha256(path)
            self._digests[key] = digest
            if any(a.sha256 == digest for a in arrivals):
                continue
            retry = False
            if digest in self.seen:
                retry, why = self._judge(path, st.st_mtime, digest)
                if not retry:
                    self.skipped.append((key, why))
                    continue
            arrivals.append(Arrival(key, digest, st.st_size, dataset_for(path, self.root),
                                    retry, str(folder) if folder else None))
        self._last = current
        self._settled = {k: v for k, v in self._settled.items() if k in current}
        self._digests = {k: v for k, v in self._digests.items() if k in current}
        return arrivals

    def _judge(self, path: Path, mtime: float, digest: str) -> tuple[bool, str]:
        """(announce again?, why not) for a content already seen."""
        seen = self.seen[digest]
        why = f"same content as {seen.get('path')} announced {seen.get('at')}"
        batch = batch_of(self.db, digest)
        if batch is not None:
            return False, why + f"; it is batch {batch[1]} of dataset {batch[0]} ({batch[2]})"
        last = last_run(self.db, digest)
        if last is None:
            return False, why + f"; no run of it in {self.db} yet"
        status, stage, message = last
        if status != "failed":
            return False, why + f"; its last run {status}"
        try:
            redropped = mtime > datetime.fromisoformat(seen["at"]).timestamp()
        except (KeyError, TypeError, ValueError):
            redropped = True
        if redropped:
            return True, ""
        return False, (why + f"; its last run failed at stage {stage}: {message}. After fixing "
                       f"the cause, drop it again or run `cleanset watch --retry {path}`")

    def mark_seen(self, arrival: Arrival) -> None:
        """Remember the content for good (written atomically, so a crash never corrupts it)."""
        self.seen[arrival.sha256] = {"path": arrival.path,
                                     "at": datetime.now(UTC).isoformat(timespec="seconds")}
        save_state(self.state_path, self.seen)


def data_files(folder: Path) -> list[Path]:
    """The data files of a dataset folder (not recursive): a supported format, not hidden, not
    a temporary name still being written, not cleanset.yaml."""
    out = []
    for p in sorted(Path(folder).iterdir()):
        if p.is_file() and p.name != DATASET_FILE and is_candidate(p):
            out.append(p)
    return out


def _peek(db: Path, sql: str, params: list) -> list[tuple] | None:
    """Rows of a read-only query; None when the warehouse is missing, cannot be read right now
    (another process is writing it) or lacks the table."""
    if not Path(db).is_file():
        return None
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error:
        return None
    try:
        return con.execute(sql, params).fetchall()
    except duckdb.Error:
        return None
    finally:
        con.close()


def last_run(db: Path, sha256: str) -> tuple[str, str | None, str | None] | None:
    """(status, stage, message) of the warehouse's latest run of this content; None when there
    is none or the warehouse cannot be read right now (another process is writing it)."""
    cols = {r[0] for r in _peek(db, "DESCRIBE runs", []) or []}
    stage = "stage, message" if "stage" in cols else "NULL, NULL"
    rows = _peek(db, f"SELECT status, {stage} FROM runs WHERE source_sha256 = ? ORDER BY "
                 "finished_at DESC NULLS LAST LIMIT 1", [sha256]) if cols else None
    return tuple(rows[0]) if rows else None


def batch_of(db: Path, sha256: str) -> tuple[str, str, str] | None:
    """(dataset, batch id, status) of a dataset folder's batch with this content; None when
    there is none or the warehouse cannot be read right now."""
    rows = _peek(db, "SELECT dataset, batch_id, status FROM batches WHERE sha256 = ? LIMIT 1",
                 [sha256])
    return tuple(rows[0]) if rows else None


def forget(state_path: Path, file: Path) -> tuple[str, dict | None]:
    """Remove a file's content from the watcher's state (so it is announced again); returns its
    sha256 and the record removed (None when it was not there)."""
    digest = file_sha256(file)
    seen = load_state(state_path)
    record = seen.pop(digest, None)
    if record is not None:
        save_state(state_path, seen)
    return digest, record


def load_state(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data.get("seen", {}) if isinstance(data, dict) else {}


def save_state(path: Path, seen: dict[str, dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"seen": seen}, indent=1, sort_keys=True))
    os.replace(tmp, path)
