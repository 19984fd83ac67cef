"""The one exception type for mistakes a user can fix (bad input, bad config).

The CLI prints its message and exits non-zero without a traceback; Prefect does not retry it.
"""

from __future__ import annotations

import logging


class CleansetError(Exception):
    """A problem with the user's input or configuration, with a message that says what to do."""


def is_retryable(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's retry_condition_fn signature
    """Retry only unexpected failures: a CleansetError will fail the same way every time."""
    try:
        state.result(raise_on_failure=True)
    except CleansetError:
        return False
    except BaseException:  # noqa: BLE001 - any other failure may be transient
        return True
    return True


class HideUserErrorTracebacks(logging.Filter):
    """Log a CleansetError as its message alone: a traceback would bury what the user must fix."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], CleansetError):
            record.exc_info = None
            record.exc_text = None
        return True


def hide_user_error_tracebacks() -> None:
    """Install the filter on Prefect's run loggers (idempotent)."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, HideUserErrorTracebacks) for f in logger.filters):
            logger.addFilter(HideUserErrorTracebacks())
