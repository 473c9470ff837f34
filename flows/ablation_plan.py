"""What an ablation is, as its YAML file (configs/ablations/) and the Prefect UI's form give it, and
the pipeline config of each of its variants.

Every variant is the base config with its own `data.*` overrides: the model, the training budget and
the tokenizer are the ablation's, fixed for all, so that only the data differs. The controls are
variants too: the null control is the base with only the order of its training rows changed, the
positive control the base with part of its text made word salad.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from flows.config import (ConfigError, PipelineConfig, describe_validation_error, load_config, parse_override,
                          parse_overrides)
from tasks.ablation.controls import PositiveControlConfig
from tasks.ablation.leakage import LeakageConfig
from tasks.ablation.reference import ReferenceConfig
from tasks.ablation.report import BASE, NULL, POSITIVE, VARIANT
from tasks.ablation.shards import AblationShardConfig
from tasks.ablation.verdict import VerdictConfig
from tasks.core.store import StageConfig

NULL_NAME, POSITIVE_NAME = "null-control", "positive-control"
NULL_DATA_SEED = 1000  # the null control's seed k orders its rows with 1000 + k, the others with k
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class VariantSpec(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(description="Names the variant in the report (letters, digits, _ . -)")
    set: list[str] = Field(default_factory=list, description="Overrides of data.* in --set syntax, e.g. "
                                                             "data.dedup.minhash=false")
    description: str = ""

    @field_validator("name")
    @classmethod
    def _a_plain_name(cls, name: str) -> str:
        if not _NAME.match(name) or name in (BASE, NULL_NAME, POSITIVE_NAME):
            raise ValueError(f"variant name {name!r}: letters, digits, _ . - only, and not {BASE}, {NULL_NAME} "
                             f"or {POSITIVE_NAME}")
        return name

    @field_validator("set")
    @classmethod
    def _data_only(cls, overrides: list[str]) -> list[str]:
        for item in overrides:
            parse_override(item)  # the syntax, before any work
            if not item.startswith("data."):
                raise ValueError(f"override {item!r}: a variant changes the data only (data.*); the model, the "
                                 f"budget and the tokenizer are the ablation's, in its top-level `set`")
        return overrides


class ControlsConfig(StageConfig):
    # Not `null` and `positive`: YAML reads a key `null` as None.
    null_control: bool = Field(True, description="Run the null control: the base with only its data order changed")
    positive_control: PositiveControlConfig = Field(default_factory=PositiveControlConfig)


class AblationConfig(StageConfig):
    name: str = Field(description="The report goes to <work>/ablations/<name>/")
    preset: str = Field("tiny", description="The base config: a preset name (flows/presets/) or a YAML file")
    overlays: list[str] = Field(default_factory=list, description="Overlays on the preset (flows/presets/overlays/)")
    set: list[str] = Field(default_factory=list, description="Overrides of the base for every variant, in --set "
                                                             "syntax: the fixed model and budget")
    work_dir: str | None = Field(None, description="Where every stage writes; default: the preset's")
    variants: list[VariantSpec] = Field(default_factory=list, description="Each compared with the base")
    seeds: int = Field(2, ge=2, description="Models trained per variant; the seed-level interval needs two or more")
    controls: ControlsConfig = Field(default_factory=ControlsConfig)
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    tokenizer_from: Literal["base", "reference"] = Field(
        "base", description="What the one shared tokenizer is trained on: the base variant's documents or the "
                            "reference set")
    leakage: LeakageConfig = Field(default_factory=LeakageConfig)
    shards: AblationShardConfig = Field(default_factory=AblationShardConfig)
    verdict: VerdictConfig = Field(default_factory=VerdictConfig)
    parallel: int | None = Field(None, ge=1, description="Trainings at once; default: one per GPU, one on a CPU")
    benchmarks: bool = Field(False, description="Also score every pretrained model on the base config's benchmark "
                                                "sets (evaluate.benchmarks): option letters and in-context")
    post_training: bool = Field(False, description="Also fine-tune every pretrained model (SFT, the base config's "
                                                   "train.sft) and score it on the chat skills and benchmark sets")

    @field_validator("name")
    @classmethod
    def _a_folder_name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"ablation name {name!r}: letters, digits, _ . - only (it names a folder)")
        return name

    @field_validator("set")
    @classmethod
    def _overrides(cls, overrides: list[str]) -> list[str]:
        for item in overrides:
            parse_override(item)
        return overrides

    @model_validator(mode="after")
    def _something_to_compare(self) -> "AblationConfig":
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must differ; got {names}")
        if not names and not self.controls.null_control and not self.controls.positive_control.enabled:
            raise ValueError("no variants and no controls: nothing to compare with the base")
        return self


@dataclass(frozen=True)
class Variant:
    name: str
    role: str
    config: PipelineConfig  # the whole pipeline config of its data stages
    overrides: tuple[str, ...]
    data_seed_offset: int = 0


def variant_config(ablation: AblationConfig, extra: list[str]) -> PipelineConfig:
    overrides = parse_overrides([*ablation.set, *extra])
    if ablation.work_dir:
        overrides["work_dir"] = ablation.work_dir
    return load_config(ablation.preset, overrides, ablation.overlays)


def plan(ablation: AblationConfig) -> list[Variant]:
    """The base first, then the controls asked for, then each variant."""
    base = variant_config(ablation, [])
    variants = [Variant(BASE, BASE, base, ())]
    if ablation.controls.null_control:
        variants.append(Variant(NULL_NAME, NULL, base, (f"the order of its training rows: data seed "
                                                        f"{NULL_DATA_SEED} + k for seed k, where the base has k",),
                                NULL_DATA_SEED))
    if ablation.controls.positive_control.enabled:
        salad = ablation.controls.positive_control
        variants.append(Variant(POSITIVE_NAME, POSITIVE, base,
                                (f"word salad: {salad.fraction:.0%} of the characters (seed {salad.seed})",)))
    for spec in ablation.variants:
        variants.append(Variant(spec.name, VARIANT, variant_config(ablation, spec.set), tuple(spec.set)))
    return variants


def load_ablation(path: str | Path, work_dir: str | None = None) -> AblationConfig:
    """An ablation file; every variant's config is resolved once here, so a bad override fails before
    any work with one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no ablation file {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if work_dir:
        raw["work_dir"] = work_dir
    try:
        ablation = AblationConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"invalid ablation {path.name}: {describe_validation_error(err)}") from None
    plan(ablation)
    return ablation
