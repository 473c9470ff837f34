from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def model_server(tiny_work, tmp_path_factory):
    """`crawl2chat serve-model` on the tiny work dir, one process for every test that talks to it."""
    from tests.support.models import model_server

    with model_server(tiny_work, tmp_path_factory.mktemp("server") / "server.log") as url:
        yield url
