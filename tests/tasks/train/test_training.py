"""Pretraining (exact resume, bits per byte, DDP) and the post-training chain on micro settings (RL's own
resume and diagnostics: test_rlhf.py)."""

import pytest

from models import checkpoint as ckpt
from tasks.chat.world import ChatDataConfig, generate_chat_data
from tasks.data.grammar import WorldSpec
from tasks.tokenizer import shards
from tasks.tokenizer.shardfile import split_files
from tasks.train import pretrain, reward, rlhf, sft

MICRO = dict(depth=2, aspect_ratio=32, head_dim=32, sequence_len=32, device_batch_size=4, lr=3e-3,
             warmup_steps=2, eval_every=5, eval_tokens=1024, checkpoint_every=3, device="cpu")


@pytest.fixture(scope="module")
def token_shards(docs_parquet, tokenizer_path, tmp_path_factory):
    m = shards.build_shards([docs_parquet], tokenizer_path, tmp_path_factory.mktemp("shards"),
                            shards.ShardConfig(val_fraction=0.2))
    return split_files(m, "train"), split_files(m, "val")


class Crash(RuntimeError):
    pass


def crash_at(step):
    def progress(p):
        if p["step"] == step:
            raise Crash(f"killed at step {step}")
    return progress


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_reproduces_the_uninterrupted_run(token_shards, tokenizer_path, tmp_path, optimizer):
    train, val = token_shards
    cfg = pretrain.PretrainConfig(steps=10, optimizer=optimizer, **MICRO)
    full = pretrain.train(cfg, tokenizer_path, train, val, tmp_path / "full")
    with pytest.raises(Crash):
        pretrain.train(cfg, tokenizer_path, train, val, tmp_path / "resumed", crash_at(7))
    # The kill came after the step-6 checkpoint and before step 9's: resume from 6.
    assert ckpt.read_meta(ckpt.latest_checkpoint(tmp_path / "resumed"))["step"] == 6
    resumed = pretrain.train(cfg, tokenizer_path, train, val, tmp_path / "resumed")
    assert resumed["resumed_from"] == 6
    assert resumed["history"]["train_loss"] == full["history"]["train_loss"]
    assert resumed["history"]["samples"] == full["history"]["samples"]
    assert resumed["val_bpb"] == full["val_bpb"]


def test_a_damaged_last_checkpoint_is_set_aside_and_the_one_before_resumes(token_shards, tokenizer_path, tmp_path):
    train, val = token_shards
    cfg = pretrain.PretrainConfig(steps=10, **MICRO)
    full = pretrain.train(cfg, tokenizer_path, train, val, tmp_path / "full")
    with pytest.raises(Crash):
        pretrain.train(cfg, tokenizer_path, train, val, tmp_path / "resumed", crash_at(8))
    weights = ckpt.latest_checkpoint(tmp_path / "resumed") / ckpt.WEIGHTS  # step 6's
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    resumed = pretrain.train(cfg, tokenizer_path, train, val, tmp_path / "resumed")
    assert resumed["resumed_from"] == 3
    assert resumed["history"]["train_loss"] == full["history"]["train_loss"]
    assert (tmp_path / "resumed" / ".broken-step-000006").is_dir()


def test_samples_and_tensorboard_events_at_each_evaluation(token_shards, tokenizer_path, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, val = token_shards
    cfg = pretrain.PretrainConfig(steps=10, tensorboard=True, sample_prompts=["The town of", "Mara"],
                                  sample_tokens=6, **MICRO)
    result = pretrain.train(cfg, tokenizer_path, train, val, tmp_path)
    samples = result["history"]["samples"]
    assert [(s["step"], s["prompt"]) for s in samples] == [(5, "The town of"), (5, "Mara"),
                                                           (10, "The town of"), (10, "Mara")]
    assert all(s["completion"] for s in samples)

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 11))
    assert [round(e.value, 5) for e in loss] == pytest.approx([v for _, v in result["history"]["train_loss"]],
                                                              abs=1e-5)
    assert [e.step for e in events.Scalars("val/bits_per_byte")] == [5, 10]
    assert {"train/lr_multiplier", "perf/tokens_per_s"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Tensors("samples/text_summary")] == [5, 10]


def test_bfloat16_and_compiled_training_run_on_cpu(token_shards, tokenizer_path, tmp_path):
    """The GPU's code paths, exercised on the CPU: autocast to bfloat16 and torch.compile (with a
    backend that needs no C++ compiler), each against the float32 eager run."""
    train, val = token_shards
    base = {**MICRO, "steps": 3, "eval_every": 3, "checkpoint_every": 3, "sample_tokens": 4}
    eager = pretrain.train(pretrain.PretrainConfig(**base), tokenizer_path, train, val, tmp_path / "eager")
    bf16 = pretrain.train(pretrain.PretrainConfig(**base, precision="bfloat16"), tokenizer_path, train, val,
                          tmp_path / "bf16")
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = pretrain.train(pretrain.PretrainConfig(**base, compile="on", compile_backend="aot_eager"),
                              tokenizer_path, train, val, tmp_path / "compiled")
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]  # one whole-model graph
    curve = lambda r: [loss for _, loss in r["history"]["train_loss"]]  # noqa: E731
    assert curve(compiled) == pytest.approx(curve(eager), rel=1e-3)  # the plain expressions, same mathematics
    assert curve(bf16) == pytest.approx(curve(eager), rel=2e-2)
    assert curve(bf16) != curve(eager)  # bfloat16 did run


def test_keeps_only_the_last_checkpoints(token_shards, tokenizer_path, tmp_path):
    train, val = token_shards
    pretrain.train(pretrain.PretrainConfig(steps=10, keep_checkpoints=2, **MICRO), tokenizer_path, train, val, tmp_path)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000009", "step-000010"]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_base_model_beats_the_unigram_baseline(token_shards, tokenizer_path, tmp_path, optimizer):
    train, val = token_shards
    # Evaluated (and sampled) once, at the end: the claim is about the trained model only.
    config = pretrain.PretrainConfig(**{**MICRO, "steps": 60, "optimizer": optimizer, "eval_every": 60,
                                        "checkpoint_every": 60})
    result = pretrain.train(config, tokenizer_path, train, val, tmp_path)
    assert result["val_bpb"] < 0.8 * result["unigram_bpb"]


@pytest.fixture(scope="module")
def chat_data():
    return generate_chat_data(ChatDataConfig(sft_examples=200, preference_pairs=200, rl_prompts=40,
                                             heldout_fraction=0.2), world=WorldSpec(seed=1234))


@pytest.fixture(scope="module")
def base_model(token_shards, tokenizer_path, tmp_path_factory):
    train, val = token_shards
    out = tmp_path_factory.mktemp("base")
    # SFT packs whole exchanges, which 32 tokens do not always hold.
    config = pretrain.PretrainConfig(**{**MICRO, "steps": 20, "sequence_len": 64})
    return pretrain.train(config, tokenizer_path, train, val, out)["checkpoint"]


def test_post_training_stages_learn(base_model, tokenizer_path, chat_data, tmp_path):
    from pathlib import Path

    s = sft.finetune(Path(base_model), tokenizer_path, chat_data["sft_train"], chat_data["sft_heldout"],
                     tmp_path / "sft", sft.SftConfig(steps=30, batch_size=8, device="cpu", samples=2))
    assert s["heldout_loss_after"] < s["heldout_loss_before"]
    assert len(s["samples"]) == 2 and all("reply" in x for x in s["samples"])

    r = reward.train_reward_model(Path(s["checkpoint"]), tokenizer_path, chat_data["preferences_train"],
                                  chat_data["preferences_heldout"], tmp_path / "rm",
                                  reward.RewardConfig(steps=30, batch_size=8, device="cpu"))
    assert r["heldout_accuracy_before"] == 0.5  # a zero head ties every pair
    assert r["train_loss"][-1][1] < r["train_loss"][0][1]

    rl_config = rlhf.RlhfConfig(steps=2, prompts_per_step=2, samples_per_prompt=2, max_reply_tokens=8,
                                eval_prompts=4, device="cpu")
    rl = rlhf.train_rlhf(Path(s["checkpoint"]), Path(r["checkpoint"]), tokenizer_path, chat_data["rl_train"],
                         chat_data["rl_heldout"], tmp_path / "rl", rl_config)
    assert rl["before"]["mean_kl"] == 0.0  # the policy starts as the reference
    assert list(rl["after"]) == list(rlhf.eval_keys(rl_config))
    assert ckpt.latest_checkpoint(tmp_path / "rl") is not None


def test_sft_and_reward_model_resume_from_their_last_checkpoint(base_model, tokenizer_path, chat_data, tmp_path):
    """Batches come from the step's own generator, so a resumed run trains on what the
    uninterrupted run did."""
    from pathlib import Path

    def sft_run(out, progress=None):
        return sft.finetune(Path(base_model), tokenizer_path, chat_data["sft_train"], chat_data["sft_heldout"],
                            out, sft.SftConfig(steps=4, batch_size=4, checkpoint_every=2, device="cpu", samples=0),
                            progress)

    full = sft_run(tmp_path / "sft-full")
    with pytest.raises(Crash):
        sft_run(tmp_path / "sft-resumed", crash_at(3))
    resumed = sft_run(tmp_path / "sft-resumed")
    assert resumed["resumed_from"] == 2
    assert resumed["train_loss"] == full["train_loss"]
    assert resumed["heldout_loss_after"] == full["heldout_loss_after"]

    def reward_run(out, progress=None):
        return reward.train_reward_model(Path(full["checkpoint"]), tokenizer_path, chat_data["preferences_train"],
                                         chat_data["preferences_heldout"], out,
                                         reward.RewardConfig(steps=4, batch_size=4, checkpoint_every=2,
                                                             device="cpu"), progress)

    full_rm = reward_run(tmp_path / "rm-full")
    with pytest.raises(Crash):
        reward_run(tmp_path / "rm-resumed", crash_at(3))
    resumed_rm = reward_run(tmp_path / "rm-resumed")
    assert resumed_rm["resumed_from"] == 2
    assert resumed_rm["train_loss"] == full_rm["train_loss"]
    assert resumed_rm["heldout_accuracy"] == full_rm["heldout_accuracy"]


def test_mfu_is_reported_against_a_given_peak(token_shards, tokenizer_path, tmp_path):
    train, val = token_shards
    result = pretrain.train(pretrain.PretrainConfig(steps=3, peak_flops=1e12, **MICRO), tokenizer_path, train, val,
                            tmp_path)
    assert 0 < result["mfu"] < 1
    assert pretrain.device_peak_flops(__import__("torch").device("cpu")) is None


def test_two_processes_match_one_at_the_same_global_batch(token_shards, tokenizer_path, tmp_path):
    """DDP under torchrun on the CPU (gloo): 2 processes × 2 rows give the loss curve of 1 × 4 rows,
    with Muon (torch.optim.Muon) on the blocks' matrices and AdamW on the rest."""
    train, val = token_shards
    base = {**MICRO, "device_batch_size": 4, "steps": 6, "checkpoint_every": 6, "eval_every": 6,
            "optimizer": "muon"}
    single = pretrain.train(pretrain.PretrainConfig(**base), tokenizer_path, train, val, tmp_path / "one")
    ddp = pretrain.train_distributed(pretrain.PretrainConfig(**{**base, "device_batch_size": 2, "nproc": 2}),
                                     tokenizer_path, train, val, tmp_path / "two")
    one_curve = [loss for _, loss in single["history"]["train_loss"]]
    two_curve = [loss for _, loss in ddp["history"]["train_loss"]]
    assert two_curve == pytest.approx(one_curve, rel=1e-4)
    assert ddp["val_bpb"] == pytest.approx(single["val_bpb"], rel=1e-4)


def test_trainings_side_by_side_in_threads_start_from_their_own_seeds(token_shards, tokenizer_path, tmp_path):
    """An ablation trains seeds in threads of one process: each model's initial weights (torch's one
    process-wide generator) must not depend on what the other thread draws meanwhile."""
    import threading

    train, val = token_shards
    configs = [pretrain.PretrainConfig(steps=2, seed=seed, data_seed=seed, **{**MICRO, "eval_every": 2,
                                                                              "checkpoint_every": 2})
               for seed in range(4)]
    alone = [pretrain.train(c, tokenizer_path, train, val, tmp_path / f"alone{i}")["history"]["train_loss"]
             for i, c in enumerate(configs)]
    together: dict[int, list] = {}

    def run(i):
        together[i] = pretrain.train(configs[i], tokenizer_path, train, val, tmp_path / f"thread{i}")["history"][
            "train_loss"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(configs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [together[i] for i in range(len(configs))] == alone
