"""The Prefect test harness that the stage-task tests share (tests/tasks/*/test_*_tasks.py).

One throwaway server and database for the whole session: starting one takes tens of seconds, so
the four families' task tests start it once, on first use, rather than once per file.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.settings import PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # Stage tasks are called here on their own, outside any flow: their run logs stay local.
    with prefect_test_harness(server_startup_timeout=120), \
            temporary_settings({PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}):
        yield
