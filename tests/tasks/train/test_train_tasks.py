"""Each training stage's @task on its own, under Prefect's test harness: the manifest it returns,
a cache hit on an identical second call, and a one-line failure on an input it cannot use.

Inputs are built as the flows build them (tokenizer and shards from the session fixtures, chat data
from tasks/chat/world.py) and every stage's result is persisted under one work dir, so a later
stage reads the manifest an earlier stage's task returned."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.chat.world import ChatDataConfig, write_chat_data
from tasks.core.store import FileEntry, Manifest, entry_problem, file_entry, results_dir
from tasks.data.grammar import WorldSpec
from tasks.tokenizer.shards import ShardConfig, build_shards
from tasks.train.pretrain import PretrainConfig, pretrain_task
from tasks.train.reward import RewardConfig, reward_task
from tasks.train.rlhf import RlhfConfig, eval_keys, rlhf_task
from tasks.train.sft import SftConfig, sft_task

# The smallest settings that still run every code path (see tests/support/pipeline.py's MICRO).
PRETRAIN = PretrainConfig(depth=1, aspect_ratio=32, head_dim=32, sequence_len=64, device_batch_size=4, steps=4,
                          eval_every=4, eval_tokens=512, checkpoint_every=2, sample_prompts=["The town of"],
                          sample_tokens=4, device="cpu")
SFT = SftConfig(steps=2, batch_size=4, warmup_steps=1, samples=1, device="cpu")
REWARD = RewardConfig(steps=2, batch_size=4, warmup_steps=1, device="cpu")
RLHF = RlhfConfig(steps=1, prompts_per_step=2, samples_per_prompt=2, max_reply_tokens=4, eval_prompts=2,
                  device="cpu")

CHAT = ChatDataConfig(sft_examples=40, preference_pairs=40, rl_prompts=10, heldout_fraction=0.2)


@pytest.fixture(scope="module")
def harness(prefect_harness):
    """The session's harness (tests/tasks/conftest.py), shared with the other families' task tests."""


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("work")


def run(task, work: Path, *args, **kwargs):
    """Call a stage's task as the flows do, results persisted in the work dir; return its state."""
    return task.with_options(result_storage=results_dir(work))(*args, work_dir=str(work), **kwargs,
                                                               return_state=True)


def completed(state) -> Manifest:
    assert state.is_completed(), state.message
    return state.result()


def assert_manifest(manifest: Manifest, stage: str, work: Path, stats: set[str]) -> None:
    """The stage's manifest: its files where it says, holding what it says, and the stats readers use."""
    assert manifest.stage == stage
    assert manifest.files and all(not Path(f.path).is_absolute() for f in manifest.files)  # relative to work
    assert all(entry_problem(f, work) is None for f in manifest.files)
    assert stats <= set(manifest.stats), stats - set(manifest.stats)


def assert_cached(state, first: Manifest) -> None:
    assert state.name == "Cached"
    assert state.result().digest() == first.digest()


def failure(state) -> str:
    """A failed run's error, which must be one line that a user can act on."""
    assert state.is_failed()
    err = state.result(raise_on_failure=False)
    message = f"{type(err).__name__}: {err}"
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def tokenizer(tokenizer_path) -> Manifest:
    return Manifest(stage="train-tokenizer", files=[file_entry(tokenizer_path)])


@pytest.fixture(scope="module")
def shards(docs_parquet, tokenizer_path, work) -> Manifest:
    return build_shards([docs_parquet], tokenizer_path, work / "inputs" / "shards", ShardConfig(val_fraction=0.2))


@pytest.fixture(scope="module")
def chat_data(work) -> Manifest:
    return write_chat_data(CHAT, WorldSpec(seed=1234), work / "inputs" / "chat")


@pytest.fixture(scope="module")
def base(harness, shards, tokenizer, work):
    return run(pretrain_task, work, shards, tokenizer, config=PRETRAIN)


@pytest.fixture(scope="module")
def sft(base, tokenizer, chat_data, work):
    return run(sft_task, work, completed(base), tokenizer, chat_data, config=SFT)


@pytest.fixture(scope="module")
def reward(sft, tokenizer, chat_data, work):
    return run(reward_task, work, completed(sft), tokenizer, chat_data, config=REWARD)


@pytest.fixture(scope="module")
def rlhf(sft, reward, tokenizer, chat_data, work):
    return run(rlhf_task, work, completed(sft), completed(reward), tokenizer, chat_data, config=RLHF)


def test_pretrain_task(base, shards, tokenizer, work):
    manifest = completed(base)
    assert_manifest(manifest, "pretrain", work, {"steps", "params", "val_bpb", "unigram_bpb", "history"})
    assert manifest.info["resumed_from"] == 0
    assert_cached(run(pretrain_task, work, shards, tokenizer, config=PRETRAIN), manifest)
    # More rows per step than the shards hold: refused before any training.
    too_big = PRETRAIN.model_copy(update={"device_batch_size": 100_000})
    assert "cannot fill one step of 100000 rows" in failure(run(pretrain_task, work, shards, tokenizer,
                                                                config=too_big))


def test_sft_task(sft, base, tokenizer, chat_data, work):
    manifest = completed(sft)
    assert_manifest(manifest, "sft", work, {"train_loss", "heldout_loss_before", "heldout_loss_after", "samples"})
    assert [row[0] for row in manifest.stats["train_loss"]] == [1, 2]
    assert manifest.info["resumed_from"] == 0
    assert_cached(run(sft_task, work, completed(base), tokenizer, chat_data, config=SFT), manifest)
    missing = str(work / "nowhere" / "tokenizer.json")
    gone = Manifest(stage="train-tokenizer", files=[FileEntry(path=missing, sha256="0" * 64, bytes=0)])
    assert failure(run(sft_task, work, completed(base), gone, chat_data, config=SFT)) == \
        f"FileNotFoundError: sft: the tokenizer input's file {missing} does not exist"


def without_rows(chat_data: Manifest, split: str, out: Path) -> Manifest:
    """A copy of the chat data with one split's file emptied."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for entry in chat_data.files:
        target = out / Path(entry.path).name
        target.write_text("" if target.name == f"{split}.jsonl" else Path(entry.path).read_text())
        files.append(file_entry(target))
    return Manifest(stage=chat_data.stage, files=files, stats=chat_data.stats)


def test_reward_task(reward, sft, tokenizer, chat_data, work):
    manifest = completed(reward)
    assert_manifest(manifest, "reward", work, {"train_loss", "heldout_accuracy", "heldout_accuracy_before",
                                               "heldout_pairs"})
    assert manifest.stats["heldout_pairs"] == chat_data.stats["preferences_heldout"]
    assert_cached(run(reward_task, work, completed(sft), tokenizer, chat_data, config=REWARD), manifest)
    # Chat data (say, a user's own) whose held-out preference split is empty: no accuracy to measure.
    no_heldout = without_rows(chat_data, "preferences_heldout", work / "inputs" / "chat-no-heldout")
    assert failure(run(reward_task, work, completed(sft), tokenizer, no_heldout, config=REWARD)) == \
        "ValueError: reward: the chat data's preferences_heldout split is empty"


def test_rlhf_task(rlhf, sft, reward, tokenizer, chat_data, work):
    manifest = completed(rlhf)
    assert_manifest(manifest, "rlhf", work, {"curve", "before", "after"})
    assert manifest.info["resumed_from"] == 0
    assert list(manifest.stats["after"]) == list(eval_keys(RLHF))
    assert_cached(run(rlhf_task, work, completed(sft), completed(reward), tokenizer, chat_data, config=RLHF),
                  manifest)
    # The SFT model where the reward model belongs: named, instead of a state dict's missing keys.
    message = failure(run(rlhf_task, work, completed(sft), completed(sft), tokenizer, chat_data, config=RLHF))
    assert message.startswith("ValueError: rlhf: the reward input ") and \
        message.endswith(" is a sft checkpoint, not a reward one")
