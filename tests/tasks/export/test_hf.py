"""The Hugging Face export: the tiny work dir's chat model (tests/support/models.py) exported, then
loaded by transformers in a process of its own (offline, its module cache in a temporary folder),
computes the project model's logits and greedy tokens, and its tokenizer gives the project's ids."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from cli.main import main
from models.chat import ChatTokens, render_prompt
from models.checkpoint import load_gpt
from models.engine import generate
from tasks.export.hf import ExportError, export_hf
from tasks.tokenizer.tokenize import load_tokenizer
from tests.support.models import QUESTION, REPLY, cli_env, one_torch_thread

LOADER = Path(__file__).with_name("load_with_transformers.py")
TEXTS = [QUESTION, "Let me compute that. The answer is 156.", "What is 7 plus 8? 12*13 = 156."]
# Two turns, the reply with its calculator call as parts.
CONVERSATION = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": REPLY},
                {"role": "user", "content": "And 7 plus 8?"}]


def checkpoint_of(work: Path, name: str) -> Path:
    return work / json.loads((work / "models.json").read_text())[name]


@pytest.fixture(scope="module")
def chat(tiny_work) -> ChatTokens:
    return ChatTokens(load_tokenizer(str(tiny_work / "tokenizer.json")))


@pytest.fixture(scope="module")
def prompts(chat) -> list[list[int]]:
    """Two chat prompts as `crawl2chat chat` renders them, and a document's start."""
    return [render_prompt(chat, [{"role": "user", "content": text}]) for text in TEXTS[:2]] + \
        [[chat.bos] + chat.text(TEXTS[2])]


@pytest.fixture(scope="module")
def exported(tiny_work, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "tiny-sft"
    export_hf(checkpoint_of(tiny_work, "sft"), tiny_work / "tokenizer.json", out)
    return out


@pytest.fixture(scope="module")
def loaded(exported, prompts, tmp_path_factory) -> dict:
    """The folder loaded by transformers in a fresh process: what it computed on the prompts."""
    out = tmp_path_factory.mktemp("transformers")
    (out / "prompts.json").write_text(json.dumps({"ids": prompts, "texts": TEXTS, "conversation": CONVERSATION}))
    # Offline, with Hugging Face's caches (the copied model code among them) in a temporary folder;
    # run from elsewhere, so nothing is read from the checkout by accident.
    env = {**cli_env(), "HF_HUB_OFFLINE": "1", "HF_HOME": str(out / "hf-home"),
           "HF_MODULES_CACHE": str(out / "hf-home" / "modules")}
    env.pop("PYTHONPATH")
    proc = subprocess.run([sys.executable, str(LOADER), str(exported), str(out / "prompts.json"), str(out)],
                          cwd=out, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "hf-home" / "modules" / "transformers_modules").is_dir()  # its cache went where it was told
    return {**json.loads((out / "results.json").read_text()), "logits": load_file(out / "logits.safetensors")}


@pytest.fixture(scope="module")
def ours(tiny_work):
    return load_gpt(checkpoint_of(tiny_work, "sft")).eval()


def test_the_folder_loads_every_weight_into_the_exported_code(loaded):
    assert loaded["loading"] == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    assert loaded["network_module"].startswith("transformers_modules.")
    assert loaded["project_imported"] == []


def test_logits_match_the_project_model(loaded, ours, prompts):
    with torch.no_grad(), one_torch_thread():
        for i, ids in enumerate(prompts):
            theirs = loaded["logits"][f"prompt{i}"]
            assert theirs.dtype == torch.float32
            assert (theirs - ours(torch.tensor([ids]))[0]).abs().max().item() <= 1e-5


def test_the_loss_is_the_project_models(loaded, ours, prompts):
    ids = torch.tensor([prompts[0]])
    with torch.no_grad():
        assert loaded["loss"] == pytest.approx(ours(ids[:, :-1], targets=ids[:, 1:]).item(), abs=1e-5)


def test_greedy_generate_gives_the_engines_tokens(loaded, ours, prompts, chat):
    with one_torch_thread():
        engine = [generate(ours, ids, max_tokens=16, temperature=0.0, stop={chat.bos, chat.assistant_end})[0].tokens
                  for ids in prompts]
    assert loaded["generated"] == engine
    # The memorized model ends some replies early: transformers stops on the end tokens where the
    # engine does, and one reply (with its calculator call) runs all 16 tokens.
    assert [len(tokens) == 16 or tokens[-1] in (chat.bos, chat.assistant_end) for tokens in engine] == [True] * 3
    assert len(engine[0]) == 16


def test_padding_is_refused_not_read(loaded):
    assert loaded["padding_refused"] == "crawl2chat models take no padding: pass rows of equal length, unpadded"


def test_the_folders_tokenizer_gives_the_project_ids(loaded, chat, prompts):
    assert loaded["tokenized"] == [chat.text(text) for text in TEXTS]
    assert loaded["document"] == prompts[2]  # with special tokens: the separator first, as in pretraining


def test_the_chat_template_renders_the_chat_format(loaded, chat):
    assert loaded["chat_prompt"] == render_prompt(chat, CONVERSATION)


def test_config_names_the_code_and_the_end_tokens(loaded, exported, chat, ours):
    config = json.loads((exported / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_crawl2chat.Crawl2ChatForCausalLM"
    assert {k: config[k] for k in ours.config.to_dict()} == ours.config.to_dict()
    assert (config["bos_token_id"], config["eos_token_id"]) == (chat.bos, [chat.assistant_end, chat.bos])
    generation = json.loads((exported / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [chat.assistant_end, chat.bos]


def test_the_command_writes_the_same_folder(loaded, exported, tiny_work, tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["export", "--hf", str(out), "--work-dir", str(tiny_work), "--model", "sft"]) == 0
    assert "AutoModelForCausalLM.from_pretrained" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in exported.iterdir())
    for path in exported.iterdir():
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name
    # An earlier export is replaced; the base model's weights are then the folder's.
    assert main(["export", "--hf", str(out), "--work-dir", str(tiny_work), "--checkpoint",
                 str(checkpoint_of(tiny_work, "base"))]) == 0
    with safe_open(out / "model.safetensors", framework="pt") as f:
        base = load_file(checkpoint_of(tiny_work, "base") / "model.safetensors")
        assert {name: f.get_tensor(name) for name in f.keys()}.keys() == {f"gpt.{name}" for name in base}
        assert torch.equal(f.get_tensor("gpt.lm_head.weight"), base["lm_head.weight"])


@pytest.mark.parametrize("argv, error", [
    (["--work-dir", "{tmp}/nowhere"], "crawl2chat: no trained models in {tmp}/nowhere: run `crawl2chat run` first"),
    (["--work-dir", "{tmp}/nowhere", "--checkpoint", "{tmp}"],
     "crawl2chat: no trained models in {tmp}/nowhere: run `crawl2chat run` first (the tokenizer comes from there, "
     "or give --tokenizer)"),
    (["--checkpoint", "{tmp}", "--tokenizer", "{work}/tokenizer.json"],
     "crawl2chat: {tmp} is not a model checkpoint (no model.safetensors and meta.json)"),
    (["--work-dir", "{work}", "--model", "reward"], "crawl2chat: unknown model 'reward': the work dir has base, sft, "
                                                    "rlhf"),
])
def test_the_command_refuses_bad_input_in_one_line(argv, error, tiny_work, tmp_path):
    fill = lambda s: s.format(tmp=tmp_path, work=tiny_work)  # noqa: E731
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--hf", str(tmp_path / "hf"), *map(fill, argv)])
    assert str(exit_.value) == fill(error)


def test_a_folder_holding_something_else_is_not_overwritten(tiny_work, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_hf(checkpoint_of(tiny_work, "sft"), tiny_work / "tokenizer.json", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def copy_checkpoint(work: Path, to: Path, stage: str | None) -> Path:
    """The base checkpoint as another stage would have written it (pretraining writes no stage)."""
    shutil.copytree(checkpoint_of(work, "base"), to)
    meta = json.loads((to / "meta.json").read_text())
    meta.pop("stage")
    (to / "meta.json").write_text(json.dumps(meta | ({"stage": stage} if stage else {})))
    return to


def test_a_pretrained_model_has_no_chat_template_and_ends_at_the_document_separator(tiny_work, tmp_path, chat):
    files = export_hf(copy_checkpoint(tiny_work, tmp_path / "step-000001", None), tiny_work / "tokenizer.json",
                      tmp_path / "hf")
    assert "chat_template.jinja" not in {f.name for f in files} and "tokenizer.json" in {f.name for f in files}
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["crawl2chat_stage"]) == (chat.bos, chat.bos, "base")


def test_a_reward_model_is_refused(tiny_work, tmp_path):
    reward = copy_checkpoint(tiny_work, tmp_path / "step-000001", "reward")
    with pytest.raises(ExportError, match="is a reward model"):
        export_hf(reward, tiny_work / "tokenizer.json", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
