"""The post-training loop on a toy regression: schedule, clipping, checkpoints, exact resume, progress,
gradient accumulation and periodic evaluation."""

from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from models import checkpoint as ckpt
from tasks.train.loop import LoopConfig, StepOutput, run_loop, step_rng

KNOBS = LoopConfig(steps=10, lr=0.01, warmup_steps=2, warmdown_frac=0.3, checkpoint_every=3, seed=5)


class Crash(RuntimeError):
    pass


def toy_model() -> torch.nn.Module:
    torch.manual_seed(0)  # the same initial weights in every run
    return torch.nn.Linear(4, 1)


def toy_step(crash_at: int | None = None, scale: float = 1.0):
    """A regression step whose batch comes from the step's generator and whose noise comes from
    torch's global one: a resumed run matches only if the loop seeds both per step."""
    def one_step(model, step: int, rng) -> StepOutput:
        if step == crash_at:
            raise Crash(f"killed at step {step}")
        x = torch.tensor([[rng.uniform(-1, 1) for _ in range(4)] for _ in range(8)])
        y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(8, 1)
        loss = scale * torch.nn.functional.mse_loss(model(x), y)
        return StepOutput(loss, {"loss": round(loss.item(), 6)})
    return one_step


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    model, seen = toy_model(), []
    result = run_loop(model, toy_step(), tmp_path_factory.mktemp("full"), KNOBS, {"stage": "toy"}, seen.append)
    return model, result, seen


def test_the_schedule_sets_the_learning_rate_of_every_step(uninterrupted):
    _, _, seen = uninterrupted
    lrs = [p["lr"] for p in seen]
    assert lrs[:3] == pytest.approx([0.005, 0.01, 0.01])  # two warmup steps
    assert lrs[-3:] == pytest.approx([0.01, 0.01 * 2 / 3, 0.01 / 3])  # warmdown over the last 3 steps


def test_progress_is_reported_after_every_step(uninterrupted):
    _, result, seen = uninterrupted
    assert [p["step"] for p in seen] == list(range(1, 11))
    assert all(p["steps"] == 10 for p in seen)
    assert [p["loss"] for p in seen] == [row[1] for row in result.curve]  # the step's metrics ride along
    assert [row[0] for row in result.curve] == list(range(1, 11))


def test_checkpoints_every_few_steps_and_after_the_last(uninterrupted, tmp_path):
    _, result, _ = uninterrupted
    assert result.checkpoint.name == "step-000010" and result.resumed_from == 0
    assert [p.name for p in ckpt.list_checkpoints(result.checkpoint.parent)] == ["step-000009", "step-000010"]
    meta = ckpt.read_meta(result.checkpoint)
    assert meta["stage"] == "toy" and meta["curve"] == result.curve


@pytest.mark.parametrize("grad_clip", [0.5, None])
def test_gradients_are_clipped_to_the_limit(tmp_path, grad_clip):
    norms = []

    def before_step(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    knobs = LoopConfig(steps=3, lr=0.01, grad_clip=grad_clip)
    handle = register_optimizer_step_pre_hook(before_step)
    try:
        run_loop(toy_model(), toy_step(scale=1000.0), tmp_path, knobs, {})
    finally:
        handle.remove()
    if grad_clip is None:
        assert min(norms) > 10  # the toy's gradients are large: the limit below does bite
    else:
        assert max(norms) == pytest.approx(grad_clip, rel=1e-4)


def test_a_killed_run_resumes_to_the_uninterrupted_weights_and_curve(uninterrupted, tmp_path):
    full_model, full, _ = uninterrupted
    with pytest.raises(Crash):
        run_loop(toy_model(), toy_step(crash_at=7), tmp_path, KNOBS, {"stage": "toy"})
    assert ckpt.latest_checkpoint(tmp_path).name == "step-000006"  # killed before step 9's checkpoint
    model, seen = toy_model(), []
    resumed = run_loop(model, toy_step(), tmp_path, KNOBS, {"stage": "toy"}, seen.append)
    assert resumed.resumed_from == 6
    assert [p["step"] for p in seen] == [7, 8, 9, 10]
    assert resumed.curve == full.curve
    assert same_weights(model, full_model)


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(uninterrupted, tmp_path):
    full_model, full, _ = uninterrupted
    with pytest.raises(Crash):
        run_loop(toy_model(), toy_step(crash_at=8), tmp_path, KNOBS, {"stage": "toy"})
    weights = ckpt.latest_checkpoint(tmp_path) / ckpt.WEIGHTS  # step 6's
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    model = toy_model()
    resumed = run_loop(model, toy_step(), tmp_path, KNOBS, {"stage": "toy"})
    assert resumed.resumed_from == 3
    assert (tmp_path / ".broken-step-000006").is_dir()
    assert resumed.curve == full.curve
    assert same_weights(model, full_model)


def test_a_finished_run_is_not_trained_again(uninterrupted, tmp_path):
    first = run_loop(toy_model(), toy_step(), tmp_path, KNOBS, {"stage": "toy"})
    again = run_loop(toy_model(), toy_step(crash_at=0), tmp_path, KNOBS, {"stage": "toy"})
    assert again.resumed_from == 10 and again.curve == first.curve and again.checkpoint == first.checkpoint


def test_every_post_training_stage_is_configured_as_the_loop_with_its_own_defaults():
    from pydantic import ValidationError

    from tasks.train.reward import RewardConfig
    from tasks.train.rlhf import RlhfConfig
    from tasks.train.sft import SftConfig

    sft, reward, rlhf = SftConfig(), RewardConfig(), RlhfConfig(keep_checkpoints=1)
    assert all(isinstance(c, LoopConfig) for c in (sft, reward, rlhf))
    assert (sft.warmup_steps, sft.warmdown_frac) == (10, 0.3)
    assert (rlhf.warmup_steps, rlhf.warmdown_frac, rlhf.keep_checkpoints) == (0, 0.0, 1)  # a constant LR
    with pytest.raises(ValidationError, match="warmdown_frac"):
        SftConfig(warmdown_frac=1.5)  # the loop's bounds hold in every stage


# --- Gradient accumulation and periodic evaluation ---------------------------------------------------

ACCUM = KNOBS.model_copy(update={"grad_accum": 2})


def drawn_step(calls: list):
    """A noiseless regression step that records (step, its generator's first draw)."""
    def one_step(model, step: int, rng) -> StepOutput:
        calls.append((step, rng.random()))
        x = torch.tensor([[rng.uniform(-1, 1) for _ in range(4)] for _ in range(4)])
        loss = torch.nn.functional.mse_loss(model(x), x.sum(dim=1, keepdim=True))
        return StepOutput(loss, {"loss": loss.item()})
    return one_step


def test_each_micro_batch_has_its_own_generator_and_the_first_is_the_steps(tmp_path):
    calls = []
    run_loop(toy_model(), drawn_step(calls), tmp_path, ACCUM.model_copy(update={"steps": 3}), {})
    assert [step for step, _ in calls] == [0, 0, 1, 1, 2, 2]  # the step function runs once per micro-batch
    firsts = [draw for _, draw in calls]
    assert len(set(firsts)) == 6
    # Micro-batch 0 draws what a step drew before accumulation existed: reward and RLHF runs are unchanged.
    assert firsts[0::2] == [step_rng(KNOBS.seed, s).random() for s in range(3)]
    assert firsts[1::2] == [step_rng(KNOBS.seed, s, 1).random() for s in range(3)]


def test_accumulated_gradients_are_those_of_the_micro_batches_mean_loss(tmp_path):
    """Two micro-batches of 4 equal-weight rows step as one batch of their 8 rows would."""
    def both_micro_batches(model, step: int, _rng) -> StepOutput:
        losses = []
        for micro in range(2):
            rng = step_rng(KNOBS.seed, step, micro)
            rng.random()  # as drawn_step does
            x = torch.tensor([[rng.uniform(-1, 1) for _ in range(4)] for _ in range(4)])
            losses.append(torch.nn.functional.mse_loss(model(x), x.sum(dim=1, keepdim=True)))
        loss = (losses[0] + losses[1]) / 2
        return StepOutput(loss, {"loss": loss.item()})

    accumulated, whole = toy_model(), toy_model()
    knobs = {"steps": 4, "grad_clip": 0.5}  # clipping sees the accumulated gradient, not one micro-batch's
    acc = run_loop(accumulated, drawn_step([]), tmp_path / "acc", ACCUM.model_copy(update=knobs), {})
    one = run_loop(whole, both_micro_batches, tmp_path / "one", KNOBS.model_copy(update=knobs), {})
    for name, value in accumulated.state_dict().items():
        assert torch.allclose(value, whole.state_dict()[name], atol=1e-6)
    assert [row[1] for row in acc.curve] == pytest.approx([row[1] for row in one.curve], abs=1e-6)


def test_a_killed_run_with_accumulation_resumes_exactly(tmp_path):
    full_model = toy_model()
    full = run_loop(full_model, toy_step(), tmp_path / "full", ACCUM, {"stage": "toy"})
    with pytest.raises(Crash):
        run_loop(toy_model(), toy_step(crash_at=7), tmp_path / "resumed", ACCUM, {"stage": "toy"})
    model = toy_model()
    resumed = run_loop(model, toy_step(), tmp_path / "resumed", ACCUM, {"stage": "toy"})
    assert resumed.resumed_from == 6
    assert resumed.curve == full.curve
    assert same_weights(model, full_model)


def weight_norm(model, step: int) -> dict:
    assert not model.training and not torch.is_grad_enabled()  # the loop evaluates in eval mode, no gradients
    return {"step_seen": step, "norm": round(float(model.weight.norm()), 6)}


def test_evaluations_every_few_steps_and_after_the_last_reach_progress_result_and_checkpoints(tmp_path):
    knobs = KNOBS.model_copy(update={"eval_every": 4})
    model, seen = toy_model(), []
    result = run_loop(model, toy_step(), tmp_path, knobs, {"stage": "toy"}, seen.append, weight_norm)
    assert model.training
    assert [row[:2] for row in result.evals] == [[4, 4], [8, 8], [10, 10]]
    assert [p["step"] for p in seen if "norm" in p] == [4, 8, 10]
    assert [p["norm"] for p in seen if "norm" in p] == [row[2] for row in result.evals]
    assert ckpt.read_meta(result.checkpoint)["evals"] == result.evals


def test_evaluations_survive_a_resume(tmp_path):
    knobs = KNOBS.model_copy(update={"eval_every": 2})
    full = run_loop(toy_model(), toy_step(), tmp_path / "full", knobs, {}, evaluate=weight_norm)
    with pytest.raises(Crash):
        run_loop(toy_model(), toy_step(crash_at=7), tmp_path / "resumed", knobs, {}, evaluate=weight_norm)
    resumed = run_loop(toy_model(), toy_step(), tmp_path / "resumed", knobs, {}, evaluate=weight_norm)
    assert resumed.resumed_from == 6 and resumed.evals == full.evals
    assert [row[0] for row in full.evals] == [2, 4, 6, 8, 10]


def test_without_an_evaluation_the_checkpoint_holds_only_the_curve(uninterrupted):
    _, result, _ = uninterrupted
    assert "evals" not in ckpt.read_meta(result.checkpoint) and result.evals == []
