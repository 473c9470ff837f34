"""Shared fixtures. Flow and stage-task tests run under Prefect's test harness (a throwaway server and
DB), one for the whole session: starting one takes tens of seconds, so every module that needs it
starts it once, on first use, rather than once per module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# One torch thread per test process, and in every process a test starts: `make test` runs one
# worker per core, and torch's default of a thread per core on top oversubscribes them; its
# thread hand-offs then cost more than the small models' matmuls (the harness's model tests took
# 31 s each beside the other worker, 8 s alone). Set before torch is imported anywhere.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_crawl(tmp_path_factory):
    """A small synthetic crawl, written once per test session."""
    from tasks.data.synthetic import CrawlConfig, generate_crawl

    out = tmp_path_factory.mktemp("crawl")
    return generate_crawl(CrawlConfig(seed=1234, num_files=2, pages_per_file=60), out)


@pytest.fixture(scope="session")
def clean_docs(small_crawl, tmp_path_factory):
    """The small crawl run through every per-file data stage (no Prefect): a list of rows."""
    from tasks.core import store
    from tasks.data import extract, langid, quality, urlfilter

    out = tmp_path_factory.mktemp("docs")
    docs = []
    for f in small_crawl.files:
        cfg = urlfilter.UrlFilterConfig()
        urls = urlfilter.filter_warc_urls(f, out, cfg, urlfilter.load_url_lists(cfg))
        keep = {r["offset"]: r for r in store.read_rows(urls.files[0].path)}
        extracted = extract.extract_warc(f.path, keep, "TEST", out, extract.ExtractConfig())
        kept, _ = langid.filter_languages(store.read_rows(extracted.files[0].path), langid.LangIdConfig())
        kept, _ = quality.filter_quality(kept, quality.QualityConfig())
        docs += kept
    return docs


@pytest.fixture(scope="session")
def docs_parquet(clean_docs, tmp_path_factory) -> str:
    from tasks.core.store import DOCUMENT_SCHEMA, write_table

    return write_table(tmp_path_factory.mktemp("parquet") / "docs.parquet", clean_docs, DOCUMENT_SCHEMA).path


@pytest.fixture(scope="session")
def tokenizer_path(docs_parquet, tmp_path_factory) -> str:
    from tasks.tokenizer.bpe import BpeConfig, train_tokenizer

    return train_tokenizer([docs_parquet], tmp_path_factory.mktemp("tok"), BpeConfig(vocab_size=400)).files[0].path


@pytest.fixture(scope="session")
def tiny_work(tmp_path_factory) -> Path:
    """A work dir with a tokenizer, a tiny chat model that has memorized one reply (with a calculator
    call), a random base model and models.json: what `crawl2chat chat` and `serve-model` read."""
    from tests.support.models import build_tiny_work_dir

    return build_tiny_work_dir(tmp_path_factory.mktemp("tiny-work"))


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.settings import PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # Stage tasks called on their own, outside any flow, keep their run logs local.
    with prefect_test_harness(server_startup_timeout=120), \
            temporary_settings({PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}):
        yield


@pytest.fixture(scope="session")
def harness_env(prefect_harness) -> dict[str, str]:
    """The environment for `crawl2chat` processes a test starts: pointed at the harness's server.
    On its own each process starts and stops a temporary server, some 7 s of every run."""
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}


# The longest modules, longest first. `make test` hands whole modules to its worker processes in
# collection order, so starting these first keeps one of them from being the tail that the other
# worker waits on at the end.
LONGEST_MODULES = ("tests/flows/test_server.py", "tests/flows/test_pipeline.py", "tests/flows/test_chaos.py",
                   "tests/flows/test_runners.py", "tests/tasks/eval/test_harness.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return LONGEST_MODULES.index(path) if path in LONGEST_MODULES else len(LONGEST_MODULES)

    items.sort(key=rank)  # stable: every module's tests keep their order, and stay together
