"""The one exception type for mistakes a user can fix (bad input, bad config).

The CLI prints its message and exits non-zero without a traceback; Prefect does not retry it.
"""

from __future__ import annotations


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
