"""Load an exported folder the way a transformers user would, in a process of its own, and write
what it computes for the test to compare with crawl2chat's own model.

    python load_with_transformers.py FOLDER PROMPTS.json OUT_DIR

PROMPTS.json: {"ids": [[token ids], ...], "texts": [str, ...], "conversation": [message, ...]}.
Writes OUT_DIR/logits.safetensors (one tensor per prompt) and OUT_DIR/results.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def main(folder: str, prompts_file: str, out_dir: str) -> None:
    prompts = json.loads(Path(prompts_file).read_text())
    model, loading = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, output_loading_info=True)
    # AutoTokenizer reads config.json too, whose class is the folder's own code.
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    logits, generated = {}, []
    with torch.no_grad():
        for i, ids in enumerate(prompts["ids"]):
            row = torch.tensor([ids])
            logits[f"prompt{i}"] = model(row).logits[0].contiguous()
            generated.append(model.generate(row, max_new_tokens=16)[0, len(ids):].tolist())
        first = torch.tensor([prompts["ids"][0]])
        loss = model(first, labels=first).loss.item()
        try:
            model(first, attention_mask=torch.cat([torch.zeros(1, 1), torch.ones(1, first.size(1) - 1)], 1))
            padding_refused = None
        except ValueError as err:
            padding_refused = str(err)
    save_file(logits, Path(out_dir) / "logits.safetensors")
    results = {
        "loading": {key: sorted(value) for key, value in loading.items()},
        "generated": generated,
        "loss": loss,
        "padding_refused": padding_refused,
        "logits_dtype": str(logits["prompt0"].dtype),
        "network_module": type(model.gpt).__module__,
        # The folder's own copy of the network ran, not the project's package.
        "project_imported": sorted(name for name in ("models", "tasks") if name in sys.modules),
        "tokenized": [tokenizer.encode(text, add_special_tokens=False) for text in prompts["texts"]],
        "document": tokenizer(prompts["texts"][-1])["input_ids"],
        "chat_prompt": tokenizer.encode(tokenizer.apply_chat_template(prompts["conversation"], tokenize=False,
                                                                      add_generation_prompt=True),
                                        add_special_tokens=False),
    }
    (Path(out_dir) / "results.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
