"""The scaling-law sweep: pretraining over a grid of model depths on the same token shards, and the
final validation loss fitted against training compute as L(C) = E + A · C^(−α).

The grid: every depth, trained either on `tokens_per_param` × its parameter count (the
compute-optimal rule is about 20, after Chinchilla; pretraining applies the rule itself, at the
sweep's ratio or train.pretrain's) or on each of a list of explicit token budgets.

The loss is the final val bits per byte that pretraining reports: it does not depend on the
tokenizer's vocabulary, so sweeps on different tokenizers compare; within one sweep it is, but for
the special tokens it leaves out, the per-token loss on the same val tokens times a constant (nats
→ bits, tokens → bytes), which scales E and A and leaves α as it is.

The compute of a run is the model's own `flops_per_token()` × tokens trained: the matmul FLOPs of a
forward and backward pass, 6 × the parameters outside the embedding table plus attention. 6·N·D
with every parameter would count the embedding table, a lookup that costs no matmul, and leave
out attention. Both shares shrink as the model grows (the table is two fifths of the parameters of
the smallest model a CPU sweeps and 4% at depth 6; attention a fifth of the FLOPs down to a tenth),
so they would not scale C by a constant but bend its small end and with it α; this is why Kaplan
et al. (2020) fit non-embedding compute.

The claim a sweep makes: the largest-compute point is held out, the law is fitted on the others,
and the report gives the relative error of its prediction of the held-out point's loss.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydantic import Field, model_validator

from tasks.core.caching import output_dir
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, atomic_path, file_entry, write_json, write_text
from tasks.train.budget import step_size

STAGE = "sweep-fit"
METRIC = "val_bpb"
FIT_PARAMETERS = 3  # E, A and α


class SweepConfig(StageConfig):
    """The grid of a scaling sweep; every other pretraining setting is the pipeline's train.pretrain."""

    depths: list[int] = Field([2, 3, 4, 5, 6], min_length=1, description="Model depths to pretrain")
    tokens_per_param: float | None = Field(None, gt=0, description="Training tokens per parameter of each depth "
                                                                   "(about 20 is compute-optimal); None: "
                                                                   "train.pretrain's own")
    tokens: list[int] = Field(default_factory=list, description="Explicit token budgets instead, each trained "
                                                                "at every depth")

    @model_validator(mode="after")
    def _a_grid_that_can_be_fitted_and_checked(self) -> "SweepConfig":
        if min(self.depths) < 1 or len(set(self.depths)) != len(self.depths):
            raise ValueError(f"depths must be distinct and at least 1, got {self.depths}")
        if self.tokens and (min(self.tokens) < 1 or len(set(self.tokens)) != len(self.tokens)):
            raise ValueError(f"tokens must be distinct positive budgets, got {self.tokens}")
        if self.tokens and self.tokens_per_param is not None:
            raise ValueError("set tokens_per_param or tokens, not both")
        points = len(self.depths) * max(1, len(self.tokens))
        if points < FIT_PARAMETERS + 1:
            raise ValueError(f"the grid has {points} points; the fit of E, A and α needs {FIT_PARAMETERS} "
                             f"besides the held-out one, so at least {FIT_PARAMETERS + 1}")
        return self


# --- The grid: one pretraining config per point ------------------------------------------------------


@dataclass(frozen=True)
class GridPoint:
    label: str
    config: Any  # the PretrainConfig this point trains with (a stage never imports a sibling stage's module)


def sweep_grid(base, sweep: SweepConfig) -> list[GridPoint]:
    """The pretraining config of every grid point: `base` (a PretrainConfig) with the point's depth
    and budget. Without explicit budgets, `steps` is cleared so that pretraining sizes each run from
    the model it builds, at the sweep's tokens_per_param or else the base's; an explicit budget
    becomes the whole steps it fills (at least one)."""
    def with_fields(**update):  # validated, unlike model_copy
        return type(base).model_validate({**base.model_dump(), **update})

    if not sweep.tokens:
        ratio = sweep.tokens_per_param or base.tokens_per_param
        return [GridPoint(f"d{d}", with_fields(depth=d, steps=None, tokens_per_param=ratio)) for d in sweep.depths]
    _, step = step_size(base.device_batch_size, base.sequence_len, base.nproc * base.nnodes,
                        base.total_batch_tokens)
    return [GridPoint(f"d{d}-t{t}", with_fields(depth=d, steps=max(1, round(t / step))))
            for d in sweep.depths for t in sweep.tokens]


# --- A trained point: its compute and its loss ---------------------------------------------------------


@dataclass(frozen=True)
class Point:
    label: str
    depth: int
    params: int
    tokens: int
    flops_per_token: int
    compute: float  # FLOPs: flops_per_token × tokens
    loss: float  # final val bits per byte


def measured_point(label: str, run: Manifest) -> Point:
    """A pretraining run's point: the tokens it trained and its loss from its manifest, its FLOPs
    per token from the model its checkpoint's meta.json describes."""
    import torch

    from models.gpt import GPT, GPTConfig

    meta = json.loads(Path(next(f.path for f in run.files if f.path.endswith("meta.json"))).read_text())
    with torch.device("meta"):  # only the shapes: no memory, no initialisation
        flops = GPT(GPTConfig(**meta["model"])).flops_per_token()
    tokens = run.stats["tokens"]
    return Point(label=label, depth=meta["model"]["n_layer"], params=run.stats["params"], tokens=tokens,
                 flops_per_token=flops, compute=float(flops * tokens), loss=float(run.stats[METRIC]))


# --- The fit ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerLaw:
    """L(C) = E + A · C^(−α), fitted on `points` points; `rmse` is the root-mean-square residual of
    the fit on them, in the loss's units (0 when there are exactly as many points as parameters)."""

    E: float
    A: float
    alpha: float
    rmse: float
    points: int

    def describe(self) -> str:
        return f"L(C) = {self.E:.4f} + {self.A:.4g} · C^(−{self.alpha:.4f})"


class FitRefused(ValueError):
    """Input a power law cannot be fitted to; the message says why, on one line."""


ALPHA_MAX = 3.0  # language-model exponents are well under 1; the bound only keeps the search finite


def predict(law: PowerLaw, compute: float | Sequence[float] | np.ndarray) -> float | np.ndarray:
    c = np.asarray(compute, dtype=float)
    loss = law.E + law.A * c ** -law.alpha
    return float(loss) if loss.ndim == 0 else loss


def fit_power_law(compute: Sequence[float], loss: Sequence[float]) -> PowerLaw:
    """Least-squares fit of L(C) = E + A · C^(−α) with scipy's curve_fit, bounded to 0 ≤ E < min(loss),
    A > 0 and 0 ≤ α ≤ ALPHA_MAX.

    The fit runs on log compute centred on its mean, with A as log A there: C spans orders of
    magnitude around 1e9 to 1e20, where A · C^(−α) in raw units is a product of a huge and a tiny
    number. The start is the best of a scan over E, each with α and A from a straight line through
    log(L − E) against log C, so the optimizer starts near the answer instead of in a flat corner.
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    c, y = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
    if c.ndim != 1 or c.shape != y.shape:
        raise FitRefused(f"compute and loss must be two lists of one length, got {c.shape} and {y.shape}")
    if len(c) < FIT_PARAMETERS:
        raise FitRefused(f"fitting E, A and α needs at least {FIT_PARAMETERS} points, got {len(c)}")
    if not (np.isfinite(c).all() and (c > 0).all()):
        raise FitRefused(f"compute must be positive and finite, got {c.tolist()}")
    if not (np.isfinite(y).all() and (y > 0).all()):
        raise FitRefused(f"loss must be positive and finite, got {y.tolist()}")
    if len(np.unique(c)) < FIT_PARAMETERS:
        raise FitRefused(f"fitting E, A and α needs {FIT_PARAMETERS} distinct compute values, got "
                         f"{len(np.unique(c))}")
    if np.ptp(y) == 0:
        raise FitRefused(f"the loss is {y[0]:g} at every point: nothing for a power law to fit")

    x = np.log(c)
    x0 = x.mean()

    def law(x, E, log_a, alpha):
        return E + np.exp(log_a - alpha * (x - x0))

    e_max = y.min() * (1 - 1e-9)
    start = min((_line_start(x - x0, y, E) for E in np.linspace(0, 0.99, 34) * y.min()), key=lambda s: s[0])[1]
    with warnings.catch_warnings():
        # With exactly three points the covariance is undefined; only the parameters are used.
        warnings.simplefilter("ignore", OptimizeWarning)
        try:
            (E, log_a, alpha), _ = curve_fit(law, x, y, p0=start, bounds=([0, -np.inf, 0], [e_max, np.inf, ALPHA_MAX]),
                                             method="trf", maxfev=20_000)
        except (RuntimeError, ValueError) as err:
            raise FitRefused(f"the power-law fit did not converge: {str(err).splitlines()[0]}") from None
    rmse = float(np.sqrt(np.mean((law(x, E, log_a, alpha) - y) ** 2)))
    # Back to raw compute: exp(log_a − α(x − x0)) = exp(log_a + α x0) · C^(−α).
    return PowerLaw(E=float(E), A=float(np.exp(log_a + alpha * x0)), alpha=float(alpha), rmse=rmse, points=len(c))


def _line_start(x: np.ndarray, y: np.ndarray, E: float) -> tuple[float, list[float]]:
    """(squared error, [E, log A, α]) of the straight line through log(L − E) against centred log C."""
    slope, intercept = np.polyfit(x, np.log(y - E), 1)
    alpha = float(np.clip(-slope, 0, ALPHA_MAX))
    guess = E + np.exp(intercept - alpha * x)
    return float(np.sum((guess - y) ** 2)), [float(E), float(intercept), alpha]


# --- The sweep's claim: fit all but the largest-compute point, predict it ---------------------------------


def compute_frontier(points: list[Point]) -> list[Point]:
    """The points no cheaper point beats: L(C) is the best loss a compute budget buys, so a run that
    a smaller budget outdid (a model trained on too few or too many tokens for its size) is not on
    the curve. With one budget rule per depth that is usually every point."""
    frontier, best = [], math.inf
    for p in sorted(points, key=lambda p: p.compute):
        if p.loss < best:
            frontier.append(p)
            best = p.loss
    return frontier


@dataclass(frozen=True)
class SweepAnalysis:
    points: list[Point]  # every point, in ascending compute
    fitted: list[str]  # labels of the points the law was fitted on
    held_out: str  # label of the largest-compute point
    law: PowerLaw
    predicted: float  # the law's loss at the held-out point's compute
    error: float  # (predicted − measured) / measured

    def point(self, label: str) -> Point:
        return next(p for p in self.points if p.label == label)

    def role(self, label: str) -> str:
        if label == self.held_out:
            return "held out"
        return "fitted" if label in self.fitted else "off the frontier"


def analyze_sweep(points: list[Point]) -> SweepAnalysis:
    """Hold out the largest-compute point, fit the law on the compute frontier of the others and
    predict the held-out point; refused (FitRefused, one line) when too few points remain."""
    if len(points) < FIT_PARAMETERS + 1:
        raise FitRefused(f"a sweep needs at least {FIT_PARAMETERS + 1} points ({FIT_PARAMETERS} to fit, "
                         f"1 held out), got {len(points)}")
    ordered = sorted(points, key=lambda p: p.compute)
    held, rest = ordered[-1], ordered[:-1]
    fitted = compute_frontier(rest)
    if len(fitted) < FIT_PARAMETERS:
        beaten = ", ".join(p.label for p in rest if p not in fitted)
        raise FitRefused(f"only {len(fitted)} of the {len(rest)} points besides the held-out one lie on the "
                         f"compute frontier (cheaper runs beat {beaten}); fitting needs {FIT_PARAMETERS}")
    law = fit_power_law([p.compute for p in fitted], [p.loss for p in fitted])
    predicted = predict(law, held.compute)
    return SweepAnalysis(points=ordered, fitted=[p.label for p in fitted], held_out=held.label, law=law,
                         predicted=predicted, error=(predicted - held.loss) / held.loss)


# --- What a sweep writes: the fit as JSON, the plot, the report -----------------------------------------


def analysis_json(analysis: SweepAnalysis) -> dict:
    held = analysis.point(analysis.held_out)
    return {
        "metric": METRIC,
        "compute": "flops_per_token × tokens",
        "law": {**asdict(analysis.law), "formula": "E + A * C**-alpha"},
        "held_out": {"label": held.label, "compute": held.compute, "loss": held.loss,
                     "predicted": analysis.predicted, "relative_error": analysis.error},
        "points": point_rows(analysis),
    }


def point_rows(analysis: SweepAnalysis) -> list[dict]:
    """One row per point: what it trained, its compute and loss, and its part in the fit."""
    return [{**asdict(p), "predicted": round(predict(analysis.law, p.compute), 5), "role": analysis.role(p.label)}
            for p in analysis.points]


def plot_sweep(analysis: SweepAnalysis, path: Path) -> Path:
    """Loss against compute (log x): the fitted points, any off the frontier, the held-out point
    with its prediction, and the law over the whole range."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a training box
    import matplotlib.pyplot as plt

    held = analysis.point(analysis.held_out)
    fig, ax = plt.subplots(figsize=(6, 4))
    c = np.geomspace(analysis.points[0].compute / 1.5, held.compute * 1.5, 200)
    ax.plot(c, predict(analysis.law, c), color="tab:blue", label=analysis.law.describe())
    for role, style in (("fitted", dict(color="tab:blue", marker="o")),
                        ("off the frontier", dict(facecolors="none", edgecolors="grey", marker="o"))):
        chosen = [p for p in analysis.points if analysis.role(p.label) == role]
        if chosen:
            ax.scatter([p.compute for p in chosen], [p.loss for p in chosen], label=role, zorder=3, **style)
    ax.scatter([held.compute], [held.loss], color="tab:red", marker="*", s=160, zorder=4, label=f"held out: {held.label}")
    ax.scatter([held.compute], [analysis.predicted], color="black", marker="x", zorder=5,
               label=f"its prediction ({analysis.error:+.1%})")
    for p in analysis.points:
        ax.annotate(p.label, (p.compute, p.loss), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("final val bits per byte")
    ax.set_title("Scaling sweep")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def sweep_report(analysis: SweepAnalysis, plot_name: str) -> str:
    """The sweep as markdown: the law, the held-out claim, the plot (a file beside it) and the points."""
    held, law = analysis.point(analysis.held_out), analysis.law
    out = ["# Scaling sweep", "",
           f"Final val bits per byte against training compute C (FLOPs: the model's FLOPs per token × tokens "
           f"trained), fitted as L(C) = E + A · C^(−α) on {law.points} points with the largest-compute "
           f"point held out.", "",
           f"- fit on {', '.join(analysis.fitted)}: E = {law.E:.4f}, A = {law.A:.4g}, α = {law.alpha:.4f}; "
           f"RMS residual {law.rmse:.4f} bits per byte",
           f"- held out {held.label} at C = {held.compute:.3g}: measured {held.loss:.4f}, predicted "
           f"{analysis.predicted:.4f}, error {analysis.error:+.2%}", "",
           f"![Loss against compute, the fitted law and the held-out point]({plot_name})", "",
           "| point | depth | parameters | tokens | FLOPs/token | compute | val bpb | law | role |",
           "|---|---|---|---|---|---|---|---|---|"]
    out += [f"| {p.label} | {p.depth} | {p.params:,} | {p.tokens:,} | {p.flops_per_token:,} | {p.compute:.3g} | "
            f"{p.loss:.4f} | {predict(law, p.compute):.4f} | {analysis.role(p.label)} |" for p in analysis.points]
    return "\n".join(out) + "\n"


FIT_FILE, REPORT_FILE, PLOT_FILE = "fit.json", "sweep.md", "sweep.png"


def write_sweep(runs: dict[str, Manifest], out_dir: Path) -> Manifest:
    """Fit, plot and report the sweep's pretraining runs ({grid label: manifest}) into `out_dir`."""
    analysis = analyze_sweep([measured_point(label, run) for label, run in runs.items()])
    fit = write_json(out_dir / FIT_FILE, analysis_json(analysis))
    plot = plot_sweep(analysis, out_dir / PLOT_FILE)
    report = write_text(out_dir / REPORT_FILE, sweep_report(analysis, PLOT_FILE))
    return Manifest(stage=STAGE, files=[file_entry(fit), file_entry(report), file_entry(plot)],
                    stats={"E": analysis.law.E, "A": analysis.law.A, "alpha": analysis.law.alpha,
                           "rmse": analysis.law.rmse, "held_out": analysis.held_out,
                           "held_out_error": analysis.error, "points": len(analysis.points)})


# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task(STAGE, packages=("scipy", "matplotlib"))
def sweep_fit_task(runs: dict[str, Manifest], work_dir: str) -> Manifest:
    return write_sweep(runs, output_dir(work_dir))
