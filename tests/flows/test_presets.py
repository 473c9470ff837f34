"""The presets along one dial: each is larger than the one before in model, tokens and hardware,
its pretraining length follows from its model, and README's preset table says what they plan."""

import re
from pathlib import Path

import pytest

from flows.config import PRESETS_DIR, load_config
from tasks.train.pretrain import planned_budget

DIAL = ["tiny", "small", "gpu", "cluster"]
README = Path(__file__).resolve().parents[2] / "README.md"


def plan(name: str):
    config = load_config(name)
    return config, *planned_budget(config.train.pretrain, config.tokenizer.bpe.vocab_size)


def test_every_preset_is_on_the_dial():
    assert sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")) == sorted(DIAL)


def test_each_preset_grows_the_model_and_its_tokens_and_none_sets_its_steps_by_hand():
    plans = [plan(name) for name in DIAL]
    for (small_cfg, small, _), (big_cfg, big, _) in zip(plans, plans[1:]):
        assert big_cfg.train.pretrain.depth > small_cfg.train.pretrain.depth
        assert big.params > small.params and big.tokens > small.tokens
    for config, budget, _ in plans:
        assert config.train.pretrain.steps is None and budget.ratio == config.train.pretrain.tokens_per_param


def test_the_gpu_presets_read_a_real_crawl_once_on_gpus():
    for name, gpus in (("gpu", 1), ("cluster", 8)):
        config = load_config(name)
        assert config.data.source.kind == "commoncrawl" and config.data.source.crawl_id
        assert config.train.pretrain.max_epochs == 1 and config.train.pretrain.device == "cuda"
        assert config.train.pretrain.nproc * config.train.pretrain.nnodes == gpus
    assert load_config("cluster").train.pretrain.tokens_per_param == 20  # compute-optimal


def readme_row(name: str) -> list[str]:
    [row] = [line for line in README.read_text().splitlines() if line.startswith(f"| {name} |")]
    return [cell.strip() for cell in row.strip("|").split("|")]


def short(n: float) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


@pytest.mark.parametrize("name", ["gpu", "cluster"])
def test_readme_states_what_the_gpu_presets_plan(name):
    """The GPU presets' vocabulary is what their tokenizer gets on a real crawl, so the planned
    figures are the run's; the time is the FLOP estimate at 40% of an H100's bf16 peak."""
    config, budget, flops_per_token = plan(name)
    _, _, depth, params, tokens, steps, time, _ = readme_row(name)
    assert depth == str(config.train.pretrain.depth)
    assert params == short(budget.params)
    assert tokens == f"{short(budget.tokens)} ({budget.ratio:g})"
    assert steps == f"{budget.steps:,}"
    gpus = config.train.pretrain.nproc * config.train.pretrain.nnodes
    seconds = budget.tokens * flops_per_token / (gpus * 0.4 * 989e12)
    stated = float(re.match(r"([\d.]+)", time).group(1)) * (3600 if " h " in time else 60)
    assert abs(stated - seconds) / seconds < 0.05, (time, seconds)


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_readme_states_the_cpu_presets_ratio_and_depth(name):
    config = load_config(name)
    _, _, depth, _, tokens, _, _, _ = readme_row(name)
    assert depth == str(config.train.pretrain.depth)
    assert tokens.endswith(f"({config.train.pretrain.tokens_per_param:g})")
