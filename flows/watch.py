"""The landing-folder watcher: one Prefect event per new complete file (tasks/landing.py decides
which files count). A deployment trigger matching the event starts a run of the file's dataset
folder (`folder`, see prefect.yaml). A file outside a dataset folder (no cleanset.yaml) starts
nothing: it is logged and reported as a `cleanset.file.unregistered` event, and left in place."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from tasks.batches import UNREGISTERED_EVENT
from tasks.landing import EVENT_NAME, Arrival, LandingWatcher, unregistered_why
from tasks.spec import DEFAULT_DB

logger = logging.getLogger("cleanset.watch")


def _log_to_console() -> None:
    """Show the watcher's lines on stderr (Prefect's logging setup leaves this logger silent)."""
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)-7s | %(message)s",
                                               "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def emit_arrival(arrival: Arrival, root: Path) -> bool:
    """Send the arrival event; False when Prefect has no API to send it to."""
    from prefect.events import emit_event

    event = emit_event(
        EVENT_NAME,
        resource={"prefect.resource.id": f"cleanset.file.{arrival.sha256}",
                  "prefect.resource.name": Path(arrival.path).name,
                  "cleanset.dataset": arrival.dataset,
                  "cleanset.landing": str(root)},
        payload=arrival.payload(),
    )
    return event is not None


def emit_unregistered(arrival: Arrival, root: Path, why: str) -> bool:
    """Report a file that belongs to no dataset folder (it starts no run)."""
    from prefect.events import emit_event

    event = emit_event(
        UNREGISTERED_EVENT,
        resource={"prefect.resource.id": f"cleanset.file.{arrival.sha256}",
                  "prefect.resource.name": Path(arrival.path).name,
                  "cleanset.landing": str(root)},
        payload={**arrival.payload(), "why": why},
    )
    return event is not None


def watch(root: Path, poll_seconds: float = 2.0, stop: threading.Event | None = None,
          state_path: Path | None = None, db: Path = DEFAULT_DB) -> None:
    """Poll `root` until `stop` is set, emitting one event per new complete file (and per file
    dropped again after its run failed, as recorded in `db`); says why it skips a seen file."""
    stop = stop or threading.Event()
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    watcher = LandingWatcher(root, state_path, db)
    _log_to_console()
    logger.info("watching %s for new files (every %.1f s)", root, poll_seconds)
    while not stop.is_set():
        try:
            for arrival in watcher.poll():
                if arrival.folder is None:  # no dataset settings: reported, left in place
                    why = unregistered_why(Path(arrival.path), root)
                    emit_unregistered(arrival, root, why)
                    logger.warning("not cleaned: %s (%s)", arrival.path, why)
                    continue
                if emit_arrival(arrival, root):
                    watcher.mark_seen(arrival)
                    logger.info("%s %s (%s, dataset %s): event %s emitted",
                                "retrying file (its last run failed)" if arrival.retry else
                                "new file", arrival.path, arrival.sha256[:12], arrival.dataset,
                                EVENT_NAME)
                else:
                    watcher.unsettle(arrival)
                    logger.warning("no Prefect API configured: %s not announced", arrival.path)
            for path, why in watcher.skipped:
                logger.info("skipping %s: %s", path, why)
        except OSError as exc:  # a file vanished or is unreadable: try again next poll
            logger.warning("landing scan failed: %s", exc)
        stop.wait(poll_seconds)


def start_watcher(root: Path, poll_seconds: float = 2.0, state_path: Path | None = None,
                  db: Path = DEFAULT_DB) -> tuple[threading.Thread, threading.Event]:
    """The watcher in a daemon thread (used by `cleanset serve`)."""
    stop = threading.Event()
    thread = threading.Thread(target=watch, args=(root, poll_seconds, stop, state_path, db),
                              name="cleanset-landing-watcher", daemon=True)
    thread.start()
    return thread, stop
