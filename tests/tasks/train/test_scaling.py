"""The scaling sweep's pure parts: the grid's pretraining configs, the power-law fit (a known law is
recovered, input it cannot fit is refused in one line), the held-out claim, and what a sweep writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.gpt import GPT, GPTConfig
from tasks.core.store import Manifest, file_entry
from tasks.train.pretrain import PretrainConfig
from tasks.train.scaling import (FitRefused, Point, SweepConfig, analyze_sweep, compute_frontier, fit_power_law,
                                 measured_point, predict, sweep_grid, write_sweep)

# A law of the shape the sweep fits, with numbers of the size a CPU sweep measures.
E, A, ALPHA = 0.8, 3.0e3, 0.35
COMPUTE = np.geomspace(1e9, 1e12, 6)


def law(compute):
    return E + A * np.asarray(compute) ** -ALPHA


def test_a_known_law_is_recovered_from_its_points():
    fit = fit_power_law(COMPUTE, law(COMPUTE))
    assert (fit.E, fit.A, fit.alpha) == pytest.approx((E, A, ALPHA), rel=1e-4)
    assert fit.rmse < 1e-6 and fit.points == 6
    assert predict(fit, 1e14) == pytest.approx(law(1e14), rel=1e-5)  # and extrapolated two decades on


def test_noisy_points_give_a_law_near_the_true_one_and_a_residual_of_the_noise():
    noisy = law(COMPUTE) * (1 + 0.005 * np.random.default_rng(0).standard_normal(len(COMPUTE)))
    fit = fit_power_law(COMPUTE, noisy)
    assert fit.alpha == pytest.approx(ALPHA, abs=0.1) and fit.E == pytest.approx(E, abs=0.05)
    assert 0 < fit.rmse < 0.02
    assert predict(fit, COMPUTE) == pytest.approx(noisy, abs=3 * fit.rmse)


def test_three_points_fix_the_three_parameters_exactly():
    fit = fit_power_law(COMPUTE[:3], law(COMPUTE[:3]))
    assert predict(fit, COMPUTE[-1]) == pytest.approx(law(COMPUTE[-1]), rel=1e-4)


def test_the_irreducible_term_stays_between_zero_and_the_lowest_loss():
    # Losses that fall faster than any power law with E ≥ 0 would put E below zero: held at the bound.
    compute = [1e9, 1e10, 1e11, 1e12]
    fit = fit_power_law(compute, [5.0, 4.0, 2.5, 1.0])
    assert fit.E == pytest.approx(0, abs=1e-6) and fit.rmse > 0.05
    fit = fit_power_law(compute, [1.0, 1.0, 1.0, 0.999])  # flat: E takes nearly all of it
    assert 0 <= fit.E < 0.999


@pytest.mark.parametrize("compute, loss, message", [
    ([1e9, 1e10], [2.0, 1.5], "needs at least 3 points, got 2"),
    ([1e9, 1e10, 1e11], [2.0, 1.5], "two lists of one length"),
    ([1e9, 1e9, 1e10, 1e10], [2.0, 1.9, 1.5, 1.4], "needs 3 distinct compute values, got 2"),
    ([1e9, 0.0, 1e11], [2.0, 1.5, 1.2], "compute must be positive and finite"),
    ([1e9, 1e10, np.inf], [2.0, 1.5, 1.2], "compute must be positive and finite"),
    ([1e9, 1e10, 1e11], [2.0, np.nan, 1.2], "loss must be positive and finite"),
    ([1e9, 1e10, 1e11], [2.0, -1.5, 1.2], "loss must be positive and finite"),
    ([1e9, 1e10, 1e11], [1.5, 1.5, 1.5], "the loss is 1.5 at every point"),
])
def test_input_a_law_cannot_be_fitted_to_is_refused_in_one_line(compute, loss, message):
    with pytest.raises(FitRefused, match=message) as refusal:
        fit_power_law(compute, loss)
    assert "\n" not in str(refusal.value)


# --- The grid ---------------------------------------------------------------------------------------


def test_the_compute_optimal_grid_lets_pretraining_size_each_depth():
    base = PretrainConfig(depth=4, steps=500, lr=0.01, sequence_len=64)
    grid = sweep_grid(base, SweepConfig(depths=[1, 2, 3, 5], tokens_per_param=5))
    assert [p.label for p in grid] == ["d1", "d2", "d3", "d5"]
    assert [p.config.depth for p in grid] == [1, 2, 3, 5]
    assert {(p.config.steps, p.config.tokens_per_param, p.config.lr, p.config.sequence_len) for p in grid} == \
        {(None, 5, 0.01, 64)}  # the budget rule is pretraining's; every other setting is the base's
    base = PretrainConfig(steps=500, tokens_per_param=1.5)
    assert {(p.config.steps, p.config.tokens_per_param) for p in sweep_grid(base, SweepConfig(depths=[1, 2, 3, 4]))} \
        == {(None, 1.5)}  # without a ratio of its own, the sweep trains at the base's


def test_explicit_budgets_are_crossed_with_the_depths_as_whole_steps():
    # 4 rows of 64 tokens per micro-batch, 2 micro-batches per step: 512 tokens a step.
    base = PretrainConfig(device_batch_size=4, sequence_len=64, total_batch_tokens=512)
    grid = sweep_grid(base, SweepConfig(depths=[1, 2], tokens=[5_000, 100]))
    assert [(p.label, p.config.depth, p.config.steps) for p in grid] == [
        ("d1-t5000", 1, 10), ("d1-t100", 1, 1), ("d2-t5000", 2, 10), ("d2-t100", 2, 1)]


@pytest.mark.parametrize("fields, message", [
    ({"depths": [2, 3, 4]}, "the grid has 3 points"),
    ({"depths": [2, 3], "tokens": [1000]}, "the grid has 2 points"),
    ({"depths": [2, 2, 3, 4]}, "depths must be distinct"),
    ({"depths": [0, 2, 3, 4]}, "at least 1"),
    ({"depths": [2, 3], "tokens": [1000, 1000]}, "tokens must be distinct positive"),
    ({"depths": [2, 3, 4, 5], "tokens": [1000], "tokens_per_param": 10}, "not both"),
])
def test_a_grid_that_cannot_be_fitted_and_checked_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        SweepConfig(**fields)


# --- Points, the frontier and the held-out claim ----------------------------------------------------------


def point(label: str, compute: float, loss: float) -> Point:
    return Point(label=label, depth=1, params=1000, tokens=1000, flops_per_token=int(compute // 1000),
                 compute=compute, loss=loss)


def test_the_frontier_keeps_the_points_no_cheaper_point_beats():
    points = [point("a", 1e9, 2.0), point("b", 2e9, 2.1), point("c", 4e9, 1.5), point("d", 8e9, 1.5)]
    assert [p.label for p in compute_frontier(points)] == ["a", "c"]


def test_the_largest_compute_point_is_held_out_and_predicted_from_the_others():
    points = [point(f"p{i}", c, float(law(c))) for i, c in enumerate(COMPUTE)]
    analysis = analyze_sweep(points[::-1])  # in any order
    assert analysis.held_out == "p5" and analysis.fitted == ["p0", "p1", "p2", "p3", "p4"]
    assert analysis.predicted == pytest.approx(law(COMPUTE[-1]), rel=1e-4) and abs(analysis.error) < 1e-4


def test_a_point_off_the_frontier_is_shown_but_not_fitted():
    points = [point(f"p{i}", c, float(law(c))) for i, c in enumerate(COMPUTE)]
    points[2] = point("p2", COMPUTE[2], 3.0)  # worse than p0 and p1 at more compute
    analysis = analyze_sweep(points)
    assert analysis.role("p2") == "off the frontier" and "p2" not in analysis.fitted
    assert abs(analysis.error) < 1e-3  # the law of the others still holds


def test_a_sweep_with_too_few_points_on_the_frontier_is_refused():
    with pytest.raises(FitRefused, match="a sweep needs at least 4 points"):
        analyze_sweep([point(f"p{i}", c, float(law(c))) for i, c in enumerate(COMPUTE[:3])])
    points = [point("a", 1e9, 2.0), point("b", 2e9, 2.5), point("c", 4e9, 1.5), point("d", 8e9, 1.2)]
    with pytest.raises(FitRefused, match=r"only 2 of the 3 points .* \(cheaper runs beat b\)"):
        analyze_sweep(points)


# --- From pretraining runs to the written sweep ----------------------------------------------------------


def pretrain_run(folder, depth: int, steps: int, val_bpb: float) -> Manifest:
    """What the sweep reads of a pretraining run: its checkpoint's meta.json and the manifest's stats
    (steps of 4 × 64 tokens)."""
    model = GPTConfig.from_depth(depth, 300, 64, aspect_ratio=16, head_dim=8)
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"model": model.to_dict(), "steps": steps}))
    return Manifest(stage="pretrain", files=[file_entry(folder / "meta.json")],
                    stats={"steps": steps, "tokens": steps * 4 * 64, "params": GPT(model).num_params(),
                           "val_bpb": val_bpb})


def test_a_runs_compute_is_its_models_flops_per_token_times_the_tokens_it_trained(tmp_path):
    p = measured_point("d3", pretrain_run(tmp_path / "d3", depth=3, steps=60, val_bpb=1.25))
    model = GPT(GPTConfig.from_depth(3, 300, 64, aspect_ratio=16, head_dim=8))
    assert (p.depth, p.tokens, p.loss, p.params) == (3, 60 * 4 * 64, 1.25, model.num_params())
    assert p.flops_per_token == model.flops_per_token() and p.compute == model.flops_per_token() * 60 * 4 * 64


def test_a_sweep_writes_its_fit_plot_and_report(tmp_path):
    runs = {}
    for depth in range(1, 6):
        run = pretrain_run(tmp_path / "runs" / f"d{depth}", depth=depth, steps=60, val_bpb=1.0)
        compute = measured_point("x", run).compute
        run.stats["val_bpb"] = float(law(compute))
        runs[f"d{depth}"] = run
    manifest = write_sweep(runs, tmp_path / "out")
    fit = json.loads((tmp_path / "out" / "fit.json").read_text())
    assert manifest.stats["held_out"] == fit["held_out"]["label"] == "d5"
    assert abs(fit["held_out"]["relative_error"]) < 1e-4 and fit["law"]["alpha"] == pytest.approx(ALPHA, rel=1e-3)
    assert [p["role"] for p in fit["points"]] == ["fitted"] * 4 + ["held out"]
    assert (tmp_path / "out" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "out" / "sweep.md").read_text()
    assert "![Loss against compute, the fitted law and the held-out point](sweep.png)" in report
    assert "| d5 | 5 |" in report and "held out d5" in report
    assert [f.path.rsplit("/", 1)[1] for f in manifest.files] == ["fit.json", "sweep.md", "sweep.png"]
