"""The ablation flow on a micro crawl under Prefect's test harness.

One ablation (the base and the two controls) is run, then the same ablation with two variants,
training two seeds at once: dedup off, and one whose data stages fail. The first run must give both controls the
reading they exist for; the second must train only the new variant and report the failed one beside
the others. The reference set is a text file read through `datasets`: clean pages of the crawl's
world plus copies of pages the crawl itself holds, which the leakage check must find and remove.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from flows.ablate import ablate_flow
from flows.ablation_plan import AblationConfig
from flows.common import tally_stage_runs
from tasks.ablation.reference import synthetic_reference
from tasks.ablation.verdict import SAME, WORSE
from tasks.data.synthetic import CrawlConfig, make_pages
from tasks.tokenizer.shardfile import read_shard
from tests.support.models import one_torch_thread
from tests.support.pipeline import DEDUP_OFF, MICRO, MICRO_ABLATION_SET

CRAWL = CrawlConfig(seed=1234, num_files=2, pages_per_file=40)
COPIED_PAGES = 6  # good pages of the crawl's first file, copied into the reference set
REFERENCE_PAGES = 40
SEEDS = 2
NO_DOCUMENTS = {"name": "no-documents", "set": ["data.langid.languages=[zz]"]}


def page_text(page_html: bytes) -> str:
    """The title and paragraphs of a synthetic page, as extraction gives them."""
    text = page_html.decode("utf-8")
    parts = re.findall(r"<h1>(.*?)</h1>", text) + re.findall(r"<p>(.*?)</p>", text.split("<article>")[1])
    return "\n".join(html.unescape(p) for p in parts)


def reference_file(path: Path) -> list[str]:
    """Clean pages of the crawl's world and copies of the crawl's own good pages, as jsonl."""
    world = CRAWL.world()
    good = [p for p in make_pages(CRAWL, 0, world.make()) if p.label == "good"][:COPIED_PAGES]
    copies = [page_text(p.html) for p in good]
    texts = copies + synthetic_reference(world, REFERENCE_PAGES - COPIED_PAGES, seed=99)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return copies


@pytest.fixture(scope="module")
def ablations(prefect_harness, tmp_path_factory):
    """The first ablation, then the same with two more variants: (ablation, stage runs, report) of each."""
    root = tmp_path_factory.mktemp("ablate")
    preset = root / "micro.yaml"
    micro = {**MICRO, "data": {**MICRO["data"], "crawl": {"num_files": CRAWL.num_files,
                                                         "pages_per_file": CRAWL.pages_per_file}}}
    preset.write_text(yaml.safe_dump({**micro, "work_dir": str(root / "work")}))
    copies = reference_file(root / "reference.jsonl")
    # Greedy answers only when models are scored on benchmarks and skills: pass@k samples are the
    # evaluation stage's, tested there.
    spec = {"name": "micro", "preset": str(preset), "set": [*MICRO_ABLATION_SET, "evaluate.models.samples=0"],
            "seeds": SEEDS, "variants": [],
            "controls": {"null_control": True, "positive_control": {"fraction": 0.8}},
            "reference": {"source": "dataset", "dataset": {"path": str(root / "reference.jsonl")}},
            "shards": {"workers": 1}, "benchmarks": True, "post_training": True}
    out = []
    with one_torch_thread():
        # The second with two trainings at once (threads of one process), as on a machine's GPUs.
        for variants, parallel in (([], None), ([DEDUP_OFF, NO_DOCUMENTS], 2)):
            ablation = AblationConfig.model_validate({**spec, "variants": variants, "parallel": parallel})
            with tally_stage_runs() as runs:
                report = Path(ablate_flow(ablation))
            out.append((ablation, runs, report, json.loads((report.parent / "ablation.json").read_text())))
    return root / "work", copies, out


def rows(result: dict) -> dict[str, dict]:
    return {r["variant"]: r for r in result["rows"]}


def test_both_controls_read_what_they_exist_for(ablations):
    _, _, [(_, _, report, result), _] = ablations
    by_name = rows(result)
    assert by_name["null-control"]["comparison"]["verdict"] == SAME
    assert by_name["positive-control"]["comparison"]["verdict"] == WORSE
    assert result["controls_passed"]
    text = report.read_text()
    assert text.index("Controls passed") < text.index("| variant |")
    assert [r["role"] for r in result["rows"]][:2] == ["null control", "positive control"]  # shown first
    for row in result["rows"]:
        assert len(row["bpb"]) == SEEDS and len(row["curves"]) == SEEDS
        assert row["curves"][0]["tokens"][-1] == row["trained_tokens"]
    assert (report.parent / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_every_variant_trains_the_same_budget_with_one_tokenizer_on_one_reference_set(ablations):
    work, _, [(_, runs, _, result), _] = ablations
    states = Counter(stage for stage, _ in runs)
    assert states["train-tokenizer"] == 1 and states["reference-set"] == 1
    assert states["pretrain"] == 3 * SEEDS  # the base and the two controls
    assert len({r["trained_tokens"] for r in result["rows"]}) == 1
    # Every variant's `val` split is the reference set in the one tokenizer: the same bytes, and it
    # is what each model is scored on; no variant has a split of its own documents to be ranked on.
    vals = sorted(work.glob("ablation-shards/*/val-*.bin"))
    # After both ablations: the base (its null control shares its shards), the salad, dedup-off.
    assert len(vals) == 3
    assert len({p.read_bytes() for p in vals}) == 1
    assert len(read_shard(vals[0])[1]) == REFERENCE_PAGES == result["reference_documents"]


def test_copies_of_reference_documents_are_removed_before_training(ablations):
    work, copies, [_, (_, _, _, result)] = ablations
    removed = {name: r["reference_copies_removed"] for name, r in rows(result).items()}
    assert 0 < removed["base"] <= COPIED_PAGES
    assert removed["dedup-off"] >= removed["base"]  # it keeps every document the base keeps
    import pyarrow.parquet as pq

    for leaks in work.glob("decontaminate/*/leaks.parquet"):
        found = pq.read_table(leaks).to_pylist()
        # Only the copies are found: their reference ids are the first rows of the reference file.
        assert all(int(leak["reference_id"].split("-")[1]) < COPIED_PAGES for leak in found)
    for docs in work.glob("decontaminate/*/docs-*.parquet"):
        kept = set(pq.read_table(docs, columns=["text"]).column("text").to_pylist())
        assert not kept & set(copies)


def test_adding_a_variant_trains_only_that_variant_and_a_failed_one_fails_alone(ablations):
    _, _, [_, (_, runs, report, result)] = ablations
    executed = Counter(stage for stage, state in runs if state == "Completed")
    assert executed["pretrain"] == SEEDS and executed["reference-score"] == SEEDS  # dedup-off's seeds
    assert executed["ablation-shards"] == 1 and executed["decontaminate"] == 1
    for shared in ("reference-set", "train-tokenizer", "word-salad", "url-filter", "extract"):
        assert executed[shared] == 0, shared
    assert executed["ablation-report"] == 1
    assert set(rows(result)) == {"base", "null-control", "positive-control", "dedup-off"}
    assert "produced no documents" in result["failed"]["no-documents"]
    assert "no-documents" in report.read_text().split("## Failed variants")[1]


def test_asked_for_benchmarks_and_post_training_every_model_is_scored_and_compared(ablations, shared_data):
    _, _, [(_, runs, report, result), _] = ablations
    executed = Counter(stage for stage, state in runs if state == "Completed")
    assert executed["sft"] == 3 * SEEDS and executed["evaluate-model"] == 2 * 3 * SEEDS
    blocks = {(b["model"], b["metric"]): b for b in result["accuracies"]}
    # The micro preset's sets (../shared/data): MMLU by letters at 0 and 1 shots and in context for
    # base models; for the fine-tuned ones, letters and the chat skills.
    assert ("base", "mmlu/continuation") in blocks and ("sft", "mmlu/0-shot") in blocks
    assert any(model == "sft" and metric.startswith("skill/") for model, metric in blocks)
    for block in blocks.values():
        assert {r["variant"] for r in block["rows"]} == {"base", "null-control", "positive-control"}
        assert all(len(r["accuracy"]) == SEEDS and 0 <= r["mean"] <= 1 for r in block["rows"])
        for row in block["rows"]:
            if row["variant"] != "base":
                seed, item = row["comparison"]["seed_interval"], row["comparison"]["item_interval"]
                assert seed["low"] <= row["comparison"]["difference"] <= seed["high"] and item["low"] <= item["high"]
    assert "## Benchmarks and skills" in report.read_text()


def test_on_gpus_one_training_each_no_more_than_the_gpu_limit_allows(prefect_harness, monkeypatch):
    """Where CUDA has 4 GPUs: 4 trainings at once, or as many as the "gpu" limit has slots (the
    ablation holds one per training); seed k trains on GPU k mod that number. A CPU trains one."""
    import torch
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from flows.ablate import seed_config, trainings_at_once
    from flows.ablation_plan import plan
    from tasks.train.pretrain import PretrainConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    ablation = AblationConfig(name="gpus", variants=[DEDUP_OFF])
    on_gpu, on_cpu = PretrainConfig(device="auto"), PretrainConfig(device="cpu")
    assert trainings_at_once(ablation, on_gpu) == 4 and trainings_at_once(ablation, on_cpu) == 1
    assert trainings_at_once(ablation.model_copy(update={"parallel": 3}), on_gpu) == 3
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="gpu", limit=2))
        try:
            assert trainings_at_once(ablation, on_gpu) == 2
        finally:
            client.delete_global_concurrency_limit_by_name("gpu")
    base = plan(ablation)[0]
    assert [seed_config(base, on_gpu, seed, 2).device for seed in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    assert seed_config(base, on_cpu, 1, 2).device == "cpu"
    assert {seed_config(base, on_gpu, seed, 1).device for seed in range(3)} == {"auto"}
