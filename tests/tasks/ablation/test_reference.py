import html
import json
import re

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from tasks.ablation.reference import (
    MIN_DOCUMENTS,
    ReferenceConfig,
    build_reference,
    dataset_reference,
    synthetic_reference,
)
from tasks.core.datasource import DataSource
from tasks.data.synthetic import CrawlConfig, make_pages

CRAWL = CrawlConfig(seed=1234, num_files=2, pages_per_file=60)
PARAGRAPH = re.compile(r"<(?:p|h1)>(.*?)</(?:p|h1)>")


def crawl_paragraphs(config: CrawlConfig) -> set[str]:
    """Every title and paragraph of the crawl's pages, as extraction would read them from the HTML."""
    world = config.world().make()
    found = set()
    for file_index in range(config.num_files):
        for page in make_pages(config, file_index, world):
            found |= {html.unescape(p) for p in PARAGRAPH.findall(page.html.decode(page.charset, errors="replace"))}
    return found


def test_synthetic_reference_is_deterministic_and_has_the_pages_asked_for():
    first = synthetic_reference(CRAWL.world(), 40, seed=7)
    assert first == synthetic_reference(CRAWL.world(), 40, seed=7)
    assert len(first) == 40
    assert len(set(first)) == 40
    assert all(t.startswith("Notes on ") and t.count("\n") >= 2 for t in first)  # a title and 2-4 paragraphs


def test_another_seed_gives_other_pages():
    one, other = synthetic_reference(CRAWL.world(), 30, seed=7), synthetic_reference(CRAWL.world(), 30, seed=8)
    paragraphs = lambda texts: {p for t in texts for p in t.split("\n")[1:]}  # noqa: E731
    assert not paragraphs(one) & paragraphs(other)


def test_synthetic_reference_shares_no_paragraph_with_the_crawls_pages():
    crawl = crawl_paragraphs(CRAWL)
    reference = synthetic_reference(CRAWL.world(), 60, seed=ReferenceConfig().seed)
    # The crawl's good pages are the grammar's articles too: its own paragraphs are found this way.
    assert sum(p.startswith("Notes on ") for p in crawl) > 20
    ref_paragraphs = {p for t in reference for p in t.split("\n")[1:]}
    assert len(ref_paragraphs) > 100
    assert not ref_paragraphs & crawl


def test_reference_ids_follow_the_texts(tmp_path):
    texts = synthetic_reference(CRAWL.world(), MIN_DOCUMENTS, seed=1)
    first, again = (pq.read_table(build_reference(texts, tmp_path / d, "test").files[0].path).column("id").to_pylist()
                    for d in ("a", "b"))
    assert first == again  # leak reports name reference documents by these ids
    assert [i.split("-")[1] for i in first] == [f"{n:06d}" for n in range(MIN_DOCUMENTS)]
    assert len(set(first)) == MIN_DOCUMENTS


@pytest.fixture
def jsonl(tmp_path):
    def write(rows: list[dict]) -> str:
        path = tmp_path / "docs.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)
    return write


def body_rows(n: int) -> list[dict]:
    return [{"body": f"Document number {i} says something of its own.", "n": i} for i in range(n)]


def test_a_dataset_reference_reads_the_chosen_column(jsonl, tmp_path):
    rows = body_rows(12)
    rows[3]["body"] = "   "  # no text: not a document
    config = ReferenceConfig(source="dataset", dataset=DataSource(path=jsonl(rows)), text_field="body",
                             max_documents=11)
    texts = dataset_reference(config.dataset, config.text_field, config.max_documents)
    assert texts == [r["body"] for r in rows[:11] if r["body"].strip()]
    manifest = build_reference(texts, tmp_path / "out", "test")
    assert manifest.stats["documents"] == 10
    written = pq.read_table(manifest.files[0].path).to_pylist()
    assert [r["text"] for r in written] == texts
    assert len({r["id"] for r in written}) == len(texts)
    assert manifest.stats["bytes"] == sum(len(t.encode()) for t in texts)


def test_a_missing_column_fails_with_one_line_naming_the_columns(jsonl):
    with pytest.raises(ValueError) as err:
        dataset_reference(DataSource(path=jsonl(body_rows(12))), "text", None)
    message = str(err.value)
    assert "\n" not in message
    assert "'text'" in message and "columns: body, n" in message


def test_fewer_documents_than_an_ablation_needs_fail_clearly(jsonl, tmp_path):
    texts = dataset_reference(DataSource(path=jsonl(body_rows(MIN_DOCUMENTS - 1))), "body", None)
    with pytest.raises(ValueError, match=f"holds {MIN_DOCUMENTS - 1} documents; an ablation needs at least "
                                         f"{MIN_DOCUMENTS}"):
        build_reference(texts, tmp_path / "out", "test")


def test_a_dataset_source_without_a_dataset_is_a_validation_error():
    with pytest.raises(ValidationError, match="reference.source is dataset but reference.dataset names none"):
        ReferenceConfig(source="dataset")
    ReferenceConfig(source="dataset", dataset=DataSource(path="any.jsonl"))  # named: valid


def test_gsm8k_questions_make_a_reference_set(shared_data, tmp_path):
    path = shared_data / "gsm8k" / "test.jsonl"
    if not path.exists():
        pytest.skip(f"{path} is not present")
    config = ReferenceConfig(source="dataset", dataset=DataSource(path=str(path)), text_field="question",
                             max_documents=50)
    texts = dataset_reference(config.dataset, config.text_field, config.max_documents)
    with open(path) as f:
        questions = [json.loads(next(f))["question"] for _ in range(50)]
    assert texts == questions
    manifest = build_reference(texts, tmp_path, config.dataset.describe())
    assert manifest.stats["documents"] == 50
    assert pq.read_table(manifest.files[0].path).column("text").to_pylist() == questions
