"""One real `prefect server start` for the deployments tests of a worker process: starting one takes
some 30 s, and these modules create objects of different names on it (pools and deployments here,
automations, blocks and a limit there), so they can share it."""

from __future__ import annotations

import pytest

from tests.support.prefect_server import prefect_server


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory):
    with prefect_server(tmp_path_factory.mktemp("deployments-server")) as server:
        yield server


@pytest.fixture(scope="module")
def server(shared_server):
    """The shared server, with this process's own client pointed at it for one module only (a
    session-wide setting would redirect the test harness's clients of later modules too)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: shared_server.api_url}):
        yield shared_server
