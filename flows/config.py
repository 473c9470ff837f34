"""PipelineConfig: the composition of every stage's own config, and the presets in flows/presets/
(package data, so an installed wheel finds them too).

The pipeline flow takes a PipelineConfig as its parameter, so the Prefect UI renders it as a form.
Unknown fields are refused, so a typo fails before any work instead of being silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from flows.runners import RunnerConfig
from tasks.chat.world import ChatDataConfig
from tasks.core.dataset import DatasetRef
from tasks.core.store import StageConfig
from tasks.data.classifier import ClassifierConfig
from tasks.data.dedup import DedupConfig
from tasks.data.extract import ExtractConfig
from tasks.data.fetch import SourceConfig
from tasks.data.langid import LangIdConfig
from tasks.data.linededup import LineDedupConfig
from tasks.data.pii import PiiConfig
from tasks.data.quality import QualityConfig
from tasks.data.refresh import RefreshConfig
from tasks.data.synthetic import CrawlConfig
from tasks.data.urlfilter import UrlFilterConfig
from tasks.eval.benchmarks import BenchmarkConfig
from tasks.eval.evaluate import EvalConfig
from tasks.eval.report import ReportConfig
from tasks.tokenizer.bpe import BpeConfig
from tasks.tokenizer.shards import ShardConfig
from tasks.train.dpo import DpoConfig
from tasks.train.pretrain import PretrainConfig
from tasks.train.reward import RewardConfig
from tasks.train.rlhf import RlhfConfig
from tasks.train.sft import SftConfig

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
# Partial configs applied on top of any preset, e.g. fineweb-exact: the data stages as FineWeb runs them.
OVERLAYS_DIR = PRESETS_DIR / "overlays"


class DataConfig(StageConfig):
    runner: RunnerConfig = Field(default_factory=RunnerConfig, description="Where the mapped data stages run")
    source: SourceConfig = Field(default_factory=SourceConfig)
    crawl: CrawlConfig = Field(default_factory=CrawlConfig, description="The synthetic crawl (source.kind: synthetic)")
    urlfilter: UrlFilterConfig = Field(default_factory=UrlFilterConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    langid: LangIdConfig = Field(default_factory=LangIdConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    classifiers: list[ClassifierConfig] = Field(
        default_factory=list, description="Model-based filters (fastText, trained in the run), in order, after PII: "
                                          "quality (DCLM-style) or a labelled class such as adult or toxic")
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    line_dedup: LineDedupConfig = Field(default_factory=LineDedupConfig,
                                        description="Paragraphs repeated across documents (CCNet), after document "
                                                    "dedup; off by default")
    refresh: RefreshConfig = Field(default_factory=RefreshConfig,
                                   description="What the recurring data refresh takes in, and its versioned dataset")

    @field_validator("classifiers")
    @classmethod
    def _distinct_names(cls, classifiers: list[ClassifierConfig]) -> list[ClassifierConfig]:
        names = [c.name for c in classifiers]
        if len(set(names)) != len(names):  # each names its stage in the accounting and its reject reasons
            raise ValueError(f"classifier names must differ; got {names}")
        return classifiers


class TokenizerConfig(StageConfig):
    bpe: BpeConfig = Field(default_factory=BpeConfig)
    shards: ShardConfig = Field(default_factory=ShardConfig)


class TrainConfig(StageConfig):
    chat_data: ChatDataConfig = Field(default_factory=ChatDataConfig)
    dataset: DatasetRef = Field(default_factory=DatasetRef,
                                description="Pretrain on a refreshed dataset (data-refresh) instead of this run's shards")
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    sft: SftConfig = Field(default_factory=SftConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    rlhf: RlhfConfig = Field(default_factory=RlhfConfig)
    dpo: DpoConfig = Field(default_factory=DpoConfig)
    preference_tuning: list[Literal["rlhf", "dpo"]] = Field(
        ["rlhf"], min_length=1, description="How the SFT model learns from the preference pairs: RLHF (reward model "
                                            "+ RL), DPO, or both, each evaluated as its own model")


class EvaluateConfig(StageConfig):
    models: EvalConfig = Field(default_factory=EvalConfig, description="How each model is scored")
    benchmarks: BenchmarkConfig = Field(default_factory=BenchmarkConfig,
                                        description="Benchmark sets (paths relative to where the run starts)")
    report: ReportConfig = Field(default_factory=ReportConfig)


class PipelineConfig(StageConfig):
    work_dir: str = Field("work", description="Where every stage writes; results and caches live here too "
                                              "(served and deployed runs: an absolute path)")
    results: str | None = Field(None, description="Where Prefect keeps stage results and cache records, if not in "
                                                  "the work dir: a shared path, or an fsspec URL such as s3://bucket/p")
    data: DataConfig = Field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)

    @field_validator("work_dir")
    @classmethod
    def _work_dir_given(cls, value: str) -> str:
        # A deployment made from prefect.yaml with CRAWL2CHAT_WORK_DIR unset has an empty work dir;
        # its runs would write into whatever directory the worker runs in.
        if not value.strip():
            raise ValueError("work_dir is empty (a deployment made with CRAWL2CHAT_WORK_DIR unset? "
                             "see docs/operations.md)")
        return value


class ConfigError(ValueError):
    """A config that does not validate; the message names the field."""


def describe_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _yaml_file(name: str | Path, folder: Path, what: str) -> tuple[Path, dict]:
    """A YAML file by name (<folder>/<name>.yaml) or path, and its content."""
    path = Path(name)
    if not path.suffix:
        path = folder / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise ConfigError(f"no {what} {str(name)!r} (known: {known})")
    return path, yaml.safe_load(path.read_text()) or {}


def load_config(preset: str | Path = "tiny", overrides: dict | None = None,
                overlays: list[str | Path] = ()) -> PipelineConfig:
    """A preset by name (flows/presets/<name>.yaml) or path, then each overlay by name
    (flows/presets/overlays/<name>.yaml) or path, then nested overrides, each applied on top."""
    path, raw = _yaml_file(preset, PRESETS_DIR, "preset")
    for overlay in overlays:
        raw = deep_merge(raw, _yaml_file(overlay, OVERLAYS_DIR, "overlay")[1])
    try:
        return PipelineConfig.model_validate(deep_merge(raw, overrides or {}))
    except ValidationError as err:
        raise ConfigError(f"invalid config {path.name}: {describe_validation_error(err)}") from None


def parse_override(text: str) -> dict:
    """'train.pretrain.steps=100' → {'train': {'pretrain': {'steps': 100}}} (value parsed as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form section.field=value")
    out: dict = yaml.safe_load(value) if value else None
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def parse_overrides(items: list[str]) -> dict:
    """Several `section.field=value` overrides, merged in order into one nested dict."""
    out: dict = {}
    for item in items:
        out = deep_merge(out, parse_override(item))
    return out
