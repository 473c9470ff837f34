"""The post-training loop on a toy regression: schedule, clipping, checkpoints, exact resume, progress."""

from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from models import checkpoint as ckpt
from tasks.train.loop import LoopConfig, StepOutput, run_loop

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
