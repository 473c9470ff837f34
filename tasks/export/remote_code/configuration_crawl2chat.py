"""The configuration of an exported crawl2chat model, for `transformers` (`AutoConfig` with
trust_remote_code=True). Its architecture fields are those of crawl2chat's own GPTConfig, stored
flat in config.json; this class adds no field of its own, so the two can never disagree.
"""

from dataclasses import fields

from transformers import PretrainedConfig

from .gpt import GPTConfig


class Crawl2ChatConfig(PretrainedConfig):
    model_type = "crawl2chat"

    def gpt_config(self) -> GPTConfig:
        return GPTConfig(**{field.name: getattr(self, field.name) for field in fields(GPTConfig)})
