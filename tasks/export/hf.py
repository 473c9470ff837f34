"""A trained model as a Hugging Face model folder, which
`transformers.AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` and
`AutoTokenizer.from_pretrained(folder, trust_remote_code=True)` (it reads config.json too) load.

No class of transformers has this architecture (rotary, QK-norm, ReLU², RMSNorm without weights,
soft-capped logits, untied embeddings), so the folder carries its own code (config.json's
`auto_map`): two small wrappers (remote_code/, shipped as package data) around copies of the
project's own models/gpt.py and models/fused.py. The network is not written twice: gpt.py is
copied with its one absolute import made relative (`from models.fused` → `from .fused`), which
transformers' loader follows, copying fused.py beside it into its module cache. The tokenizer goes
beside it (tasks/tokenizer/interop.py), and for a chat model the chat format as a chat template.
Exporting needs no transformers; loading the folder does.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import shutil
from pathlib import Path

from models import checkpoint as ckpt
from tasks.core.store import atomic_path
from tasks.tokenizer.interop import save_hf_tokenizer
from tasks.tokenizer.tokenize import load_separator, load_tokenizer

REMOTE_CODE = Path(__file__).with_name("remote_code")
CHAT_TEMPLATE = Path(__file__).with_name("chat_template.jinja")
CONFIG_MODULE, MODEL_MODULE = "configuration_crawl2chat", "modeling_crawl2chat"
# The project modules the exported code runs, by the names they take in the folder.
NETWORK_MODULES = {"gpt.py": "models.gpt", "fused.py": "models.fused"}
# gpt.py's import of fused.py, and what it becomes in the folder.
PROJECT_IMPORT, FOLDER_IMPORT = "from models.fused import", "from .fused import"
PROJECT_PACKAGES = ("models", "tasks", "flows", "deployments", "cli")
# The wrapper holds the GPT under this attribute, so its weights are named `gpt.<our name>`.
WEIGHT_PREFIX = "gpt."


class ExportError(ValueError):
    """The checkpoint cannot be exported (not a language model, or the folder is taken)."""


def network_sources() -> dict[str, str]:
    """gpt.py and fused.py as they go into the folder: gpt.py's import of fused.py made relative.
    Refuses (rather than writing a folder that fails to load) when either imports any other part
    of the project, which the folder would not have."""
    sources = {name: Path(importlib.util.find_spec(module).origin).read_text()
               for name, module in NETWORK_MODULES.items()}
    if sources["gpt.py"].count(PROJECT_IMPORT) != 1:
        raise RuntimeError(f"models/gpt.py no longer imports fused.py by `{PROJECT_IMPORT}`: update {__name__}")
    sources["gpt.py"] = sources["gpt.py"].replace(PROJECT_IMPORT, FOLDER_IMPORT)
    for name, source in sources.items():
        for node in ast.walk(ast.parse(source)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            leaked = [n for n in names if n and n.split(".")[0] in PROJECT_PACKAGES]
            if leaked:
                raise RuntimeError(f"the exported {name} would import {leaked[0]}, which the folder lacks")
    return sources


def export_weights(checkpoint_dir: Path, out: Path) -> str:
    """The checkpoint's weights under the wrapper's names; returns their dtype's name."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(checkpoint_dir / ckpt.WEIGHTS, framework="pt") as f:
        tensors = {WEIGHT_PREFIX + name: f.get_tensor(name) for name in f.keys()}
    # transformers reads the "format" entry to know the tensors are torch's.
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    # One model's state dict: every tensor has the dtype the model was trained in.
    return str(tensors[WEIGHT_PREFIX + "lm_head.weight"].dtype).removeprefix("torch.")


def start_and_end_tokens(enc, separator: str, chat: bool) -> tuple[int, list[int]]:
    """The token a text starts with, and those generation stops at. A conversation starts with
    <|bos|>; its assistant turn ends at <|assistant_end|>, or at a <|bos|> that would open a new
    conversation (crawl2chat's engine stops on both). A base model's document starts with the
    tokenizer's document separator and ends where the next one's begins."""
    if chat:
        bos = enc.encode_single_token("<|bos|>")
        return bos, [enc.encode_single_token("<|assistant_end|>"), bos]
    return enc.encode_single_token(separator), [enc.encode_single_token(separator)]


def hf_config(model: dict, stage: str | None, bos: int, eos: list[int], dtype: str) -> dict:
    """config.json: our GPTConfig fields as they are, what transformers needs to find the code,
    and the token ids generation starts and stops on."""
    return {
        "architectures": ["Crawl2ChatForCausalLM"],
        "model_type": "crawl2chat",
        "auto_map": {"AutoConfig": f"{CONFIG_MODULE}.Crawl2ChatConfig",
                     "AutoModelForCausalLM": f"{MODEL_MODULE}.Crawl2ChatForCausalLM"},
        **model,
        "bos_token_id": bos,
        "eos_token_id": eos if len(eos) > 1 else eos[0],
        "tie_word_embeddings": False,
        # The wrapper keeps no KV cache (see modeling_crawl2chat.py).
        "use_cache": False,
        "torch_dtype": dtype,
        "crawl2chat_stage": stage or "base",
    }


def generation_config(config: dict) -> dict:
    """Greedy by default, like `crawl2chat chat`."""
    return {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"], "do_sample": False,
            "use_cache": False}


def export_hf(checkpoint_dir: str | Path, tokenizer_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write the Hugging Face folder of one checkpoint and its tokenizer (a tokenizer file, as
    tasks/tokenizer/bpe.py writes); returns the files written.
    `out_dir` must be new, empty or an earlier export (which is replaced): the folder is built beside
    it and renamed into place, so a failed export leaves nothing half-written."""
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    if not (checkpoint_dir / ckpt.WEIGHTS).is_file() or not (checkpoint_dir / ckpt.META).is_file():
        raise ExportError(f"{checkpoint_dir} is not a model checkpoint (no {ckpt.WEIGHTS} and {ckpt.META})")
    meta = ckpt.read_meta(checkpoint_dir)
    if meta.get("stage") == "reward":
        raise ExportError(f"{checkpoint_dir} is a reward model: it scores replies, it does not write them")
    _check_replaceable(out_dir)
    if not Path(tokenizer_path).is_file():
        raise ExportError(f"no tokenizer file at {tokenizer_path}")
    try:
        enc, separator = load_tokenizer(str(tokenizer_path)), load_separator(str(tokenizer_path))
    except ValueError as err:
        raise ExportError(str(err)) from None
    # Pretraining writes no stage into its checkpoints; every later stage trains the chat format.
    stage = meta.get("stage")
    chat = stage is not None

    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for name in (CONFIG_MODULE, MODEL_MODULE):
            shutil.copyfile(REMOTE_CODE / f"{name}.py", tmp / f"{name}.py")
        for name, source in network_sources().items():
            (tmp / name).write_text(source)
        dtype = export_weights(checkpoint_dir, tmp)
        config = hf_config(meta["model"], stage, *start_and_end_tokens(enc, separator, chat), dtype)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "generation_config.json").write_text(json.dumps(generation_config(config), indent=2) + "\n")
        try:
            save_hf_tokenizer(tokenizer_path, tmp)
        except ValueError as err:  # a vocabulary tokenizers cannot express, said in one line
            raise ExportError(f"{tokenizer_path}: {err}") from None
        if chat:
            shutil.copyfile(CHAT_TEMPLATE, tmp / CHAT_TEMPLATE.name)
        if out_dir.exists():
            shutil.rmtree(out_dir)
    return sorted(out_dir.iterdir())


def _check_replaceable(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} is a file, not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        config = out_dir / "config.json"
        try:
            earlier = json.loads(config.read_text()).get("model_type") == "crawl2chat"
        except (OSError, ValueError):
            earlier = False
        if not earlier:
            raise ExportError(f"{out_dir} is not empty and holds no earlier crawl2chat export: give a new folder")
