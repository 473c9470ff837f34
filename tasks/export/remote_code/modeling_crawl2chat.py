"""An exported crawl2chat model as a `transformers` causal LM (`AutoModelForCausalLM` with
trust_remote_code=True).

The network is crawl2chat's own GPT, from gpt.py and fused.py beside this file (copies of the
project's modules, made when the model was exported): this file only adapts it to transformers'
interfaces, so the exported model computes exactly what the project's model does.
"""

import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_crawl2chat import Crawl2ChatConfig
from .gpt import GPT, rotary_tables


class Crawl2ChatForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = Crawl2ChatConfig
    base_model_prefix = "gpt"
    _no_split_modules = ["Block"]

    def __init__(self, config: Crawl2ChatConfig):
        super().__init__(config)
        self.gpt = GPT(config.gpt_config())
        self.post_init()

    def _init_weights(self, module):
        # Every weight comes from model.safetensors. What the file does not hold, the rotary tables
        # (buffers the GPT computes), transformers may leave unfilled when it builds the model
        # without memory before loading: they are computed again here.
        if isinstance(module, GPT):
            head_dim = module.config.n_embd // module.config.n_head
            cos, sin = rotary_tables(module.cos.size(1), head_dim, module.config.rope_base, device=module.cos.device)
            module.cos.copy_(cos)
            module.sin.copy_(sin)

    def get_input_embeddings(self):
        return self.gpt.wte

    def get_output_embeddings(self):
        return self.gpt.lm_head

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, **kwargs) -> CausalLMOutputWithPast:
        """Float logits, soft-capped as in training; with `labels`, the mean next-token loss
        (transformers' convention: labels are the inputs, shifted here, -100 ignored)."""
        if attention_mask is not None and not bool(attention_mask.all()):
            # The GPT attends causally to every position it is given: a padded row would read its
            # padding. Rows of equal length, or one prompt at a time, need no mask.
            raise ValueError("crawl2chat models take no padding: pass rows of equal length, unpadded")
        logits = self.gpt(input_ids)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, attention_mask=None, **kwargs) -> dict:
        # No KV cache here: each step runs the whole sequence again. Simple and exact, and cheap at the
        # lengths these models read; crawl2chat's own engine (models/engine.py) is the fast path.
        return {"input_ids": input_ids, "attention_mask": attention_mask}
