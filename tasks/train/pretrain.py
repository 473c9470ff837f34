"""GPT pretraining on the token shards, with checkpoints and exact resume.

The loader's position is saved with every checkpoint, so a run resumed from a checkpoint at step s
sees exactly the tokens the uninterrupted run would have seen.
Checkpoints live in a directory named by the digest of the config and the data, so a changed
config never resumes from another run's weights.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import Field
from torch.nn.parallel import DistributedDataParallel

from models import checkpoint as ckpt
from models.gpt import GPT, GPTConfig
from models.optim import apply_schedule, lr_multiplier, make_optimizer
from tasks.core.caching import output_dir
from tasks.core.progress import progress_reporter
from tasks.core.runlog import RunLog, empty_history
from tasks.core.stage import stage_task
from tasks.core.store import Manifest, StageConfig, write_json
from tasks.tokenizer.loader import TokenLoader
from tasks.tokenizer.shardfile import read_shard, split_files
from tasks.tokenizer.tokenize import load_tokenizer, token_byte_lengths
from tasks.train.budget import Budget, check_epochs, meta_model, plan_budget
from tasks.train.checkpoints import checkpoint_manifest
from tasks.train.precision import Precision, Switch, autocast, maybe_compile
from tasks.train.samples import BASE_PROMPTS, base_samples

STAGE = "pretrain"


class PretrainConfig(StageConfig):
    depth: int = Field(4, ge=1, description="The one dial: layers; width = depth × aspect_ratio")
    aspect_ratio: int = Field(32, ge=1)
    head_dim: int = Field(32, ge=8)
    sequence_len: int = Field(128, ge=8)
    device_batch_size: int = Field(8, ge=1)
    total_batch_tokens: int | None = Field(None, description="Tokens per optimizer step; default one micro-batch")
    steps: int | None = Field(None, ge=1, description="Optimizer steps; None: tokens_per_param × parameters")
    tokens_per_param: float = Field(20.0, gt=0, description="Training tokens per model parameter when steps is "
                                                           "None (about 20 is compute-optimal)")
    max_epochs: float | None = Field(1.0, gt=0, description="Passes over the train shards the budget may take; "
                                                            "a run needing more is refused before training. "
                                                            "None: any")
    lr: float = Field(3e-3, gt=0, description="AdamW learning rate (all parameters, or those Muon leaves)")
    optimizer: Literal["adamw", "muon"] = Field("adamw", description="muon: Muon for the blocks' matrices")
    muon_lr: float = Field(0.02, gt=0)
    weight_decay: float = 0.0
    warmup_steps: int = 20
    warmdown_frac: float = Field(0.3, ge=0, le=1)
    eval_every: int = Field(100, ge=1)
    eval_tokens: int = Field(16_384, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    seed: int = Field(42, description="The weights' initialisation (and the samples')")
    data_seed: int | None = Field(None, description="Shuffle the training rows each epoch from this seed; None: "
                                                    "in shard order. Ablations vary it apart from `seed`")
    device: str = "auto"
    precision: Precision = Field("auto", description="Autocast dtype; auto: bfloat16 on GPUs with it, else float32")
    compile: Switch = Field("auto", description="torch.compile; auto: on CUDA only (on the CPU it costs time)")
    compile_backend: str = Field("inductor", description="torch.compile backend")
    # Off by default: rows start at documents only by cropping the tail of any document longer
    # than a row, which suits long contexts (2048 tokens) but, at the tiny preset's 128, dropped
    # most of each document and raised val bits/byte from 0.236 to 0.357.
    bos_aligned: bool = Field(False, description="Every training row starts at a document start (crops long docs)")
    nproc: int = Field(1, ge=1, description="Processes per node; more than 1 launches torchrun (DDP)")
    nnodes: int = Field(1, ge=1, description="Nodes, for multi-node torchrun")
    rdzv_endpoint: str | None = Field(None, description="host:port of the rendezvous, for multi-node torchrun")
    peak_flops: float | None = Field(None, description="Device peak FLOP/s for MFU; default: known GPUs' bf16 "
                                                       "dense peak, none on CPU")
    sample_prompts: list[str] = Field(default_factory=lambda: list(BASE_PROMPTS),
                                      description="Prompts the model continues at every evaluation")
    sample_tokens: int = Field(32, ge=1)
    tensorboard: bool = Field(False, description="Also write TensorBoard events to <run dir>/tensorboard")


# torch's default generator is one per process. Two trainings in threads of one process (an
# ablation's seeds, side by side on a machine's GPUs) would interleave their draws from it, and
# a model's initial weights would depend on timing; seeding and drawing under this lock keeps
# each a function of its own seed.
_GLOBAL_RNG = threading.Lock()

# Dense bf16 peak FLOP/s of the GPUs MFU is usually quoted on (vendor data sheets).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 125e12}


def device_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def model_config(config: PretrainConfig, vocab_size: int) -> GPTConfig:
    return GPTConfig.from_depth(config.depth, vocab_size, config.sequence_len,
                                aspect_ratio=config.aspect_ratio, head_dim=config.head_dim)


def training_budget(config: PretrainConfig, params: int, train_rows: int, world: int) -> tuple[Budget, float]:
    """The steps this config trains for, and the epochs of `train_rows` they take (refused above max_epochs)."""
    budget = plan_budget(params, config.device_batch_size, config.sequence_len, world, config.total_batch_tokens,
                         config.steps, config.tokens_per_param)
    return budget, check_epochs(budget, train_rows, config.sequence_len, config.max_epochs)


def planned_budget(config: PretrainConfig, vocab_size: int) -> tuple[Budget, int]:
    """The budget and the model FLOPs per token a config plans, before any data exists: what a
    preset costs (README's preset table)."""
    model = meta_model(model_config(config, vocab_size))
    return plan_budget(model.num_params(), config.device_batch_size, config.sequence_len, config.nproc * config.nnodes,
                       config.total_batch_tokens, config.steps, config.tokens_per_param), model.flops_per_token()


def describe_budget(config: PretrainConfig, tokenizer_path: str, train_paths: list[str]) -> str:
    """The run's budget in one line, checked against the data before any process starts: a run
    that would need too many epochs fails here with the one-line reason, not inside torchrun."""
    world = config.nproc * config.nnodes
    params = meta_model(model_config(config, load_tokenizer(tokenizer_path).n_vocab)).num_params()
    rows = len(TokenLoader(train_paths, config.device_batch_size, config.sequence_len, world_size=world,
                            bos_aligned=config.bos_aligned).rows)
    budget, epochs = training_budget(config, params, rows, world)
    rule = f" ({budget.ratio:g} tokens per parameter)" if budget.ratio is not None else ""
    return (f"{params:,} parameters, {budget.steps:,} steps of {budget.tokens_per_step:,} tokens = "
            f"{budget.tokens:,} tokens{rule}: {epochs:.2f} epochs of the train shards")


def load_tokens(paths: list[str]) -> np.ndarray:
    parts = [read_shard(p)[0] for p in paths]
    return np.concatenate(parts) if len(parts) > 1 else np.asarray(parts[0])


@torch.no_grad()
def bits_per_byte(model: GPT, tokens: np.ndarray, byte_lengths: np.ndarray, seq: int, batch: int,
                  max_tokens: int, device) -> float:
    """Cross-entropy in bits per UTF-8 byte of the targets; special tokens are left out."""
    model.eval()
    lengths = torch.from_numpy(byte_lengths).to(device)
    nats, nbytes = 0.0, 0
    span = batch * seq
    n = min(len(tokens) - 1, max_tokens)
    for start in range(0, n - span + 1, span):
        window = torch.from_numpy(tokens[start:start + span + 1].astype(np.int64)).to(device)
        x, y = window[:-1].view(batch, seq), window[1:].view(batch, seq)
        loss = model(x, y, reduction="none")
        b = lengths[y.reshape(-1)]
        nats += float((loss * (b > 0)).sum())
        nbytes += int(b.sum())
    model.train()
    if nbytes == 0:
        raise ValueError("validation split too small for one evaluation batch")
    return nats / (math.log(2) * nbytes)


def unigram_bits_per_byte(train: np.ndarray, val: np.ndarray, byte_lengths: np.ndarray) -> float:
    """The baseline: a unigram model of the train tokens (add-one smoothed) scored on val."""
    counts = np.bincount(train, minlength=len(byte_lengths)).astype(np.float64) + 1.0
    logp = np.log2(counts / counts.sum())
    b = byte_lengths[val[1:]]
    return float(-(logp[val[1:]] * (b > 0)).sum() / b.sum())


def train(config: PretrainConfig, tokenizer_path: str, train_paths: list[str], val_paths: list[str],
          run_dir: Path, progress: Callable[[dict], None] | None = None) -> dict:
    """Train (or resume) and return the final checkpoint path and metrics.

    Under torchrun (RANK and WORLD_SIZE set) every process runs this with its own share of each
    step's rows; gradients are averaged by DDP (gloo on CPU, NCCL on GPU); rank 0 alone evaluates
    and writes checkpoints, and its result is the run's.
    """
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and config.device != "cpu" else "gloo")
    device = ckpt.pick_device(config.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    enc = load_tokenizer(tokenizer_path)
    byte_lengths = token_byte_lengths(enc)
    loader = TokenLoader(train_paths, config.device_batch_size, config.sequence_len, rank=rank, world_size=world,
                         bos_aligned=config.bos_aligned, shuffle_seed=config.data_seed)
    val_tokens = load_tokens(val_paths)

    gpt_config = model_config(config, enc.n_vocab)
    with _GLOBAL_RNG:  # seeded and drawn from as one step: see _GLOBAL_RNG
        torch.manual_seed(config.seed)
        model = GPT(gpt_config).to(device)
    rows_per_micro_step = config.device_batch_size * config.sequence_len * world
    budget, epochs = training_budget(config, model.num_params(), len(loader.rows), world)
    steps, micro_steps = budget.steps, budget.micro_steps
    optimizer = make_optimizer(model, config.optimizer, config.lr, config.muon_lr, config.weight_decay)

    start, history = 0, empty_history()
    meta = ckpt.resume_latest(run_dir, model, optimizer)
    if meta is not None:
        start, history = meta["step"], meta["history"]
        loader.load_state(meta["data_position"])
        torch.set_rng_state(torch.tensor(meta["rng"], dtype=torch.uint8))
    log = RunLog(history, steps, progress if rank == 0 else None,
                 run_dir / "tensorboard" if config.tensorboard and rank == 0 else None, resumed_at=start)

    precision = autocast(device, config.precision)
    step_model = DistributedDataParallel(model) if world > 1 else model
    step_model = maybe_compile(step_model, device, config.compile, config.compile_backend)
    meta_base = {"model": gpt_config.to_dict(), "config": config.model_dump(mode="json"), "steps": steps}

    def evaluate_and_sample(step: int) -> None:
        log.val_bpb(step, bits_per_byte(model, val_tokens, byte_lengths, config.sequence_len,
                                        config.device_batch_size, config.eval_tokens, device))
        log.samples(step, base_samples(model, enc, config.sample_prompts, config.sample_tokens, seed=step))
        model.train()

    peak = config.peak_flops or device_peak_flops(device)
    flops_per_token = model.flops_per_token()
    t0, tokens_done = time.perf_counter(), 0
    model.train()
    for step in range(start, steps):
        multiplier = lr_multiplier(step, steps, config.warmup_steps, config.warmdown_frac)
        apply_schedule(optimizer, multiplier)
        loss_sum = 0.0
        for _ in range(micro_steps):
            x, y = loader.next_batch()
            with precision:
                loss = step_model(x.to(device), y.to(device)) / micro_steps
            loss.backward()
            loss_sum += loss.detach()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if world > 1:  # the logged loss is the global batch's, as a single process would log it
            dist.all_reduce(loss_sum)
            loss_sum /= world
        loss_sum = loss_sum.item()
        tokens_done += micro_steps * rows_per_micro_step
        done = step + 1
        log.loss(done, loss_sum, multiplier)
        if rank == 0 and (done % config.eval_every == 0 or done == steps):
            evaluate_and_sample(done)
        if rank == 0 and (done % config.checkpoint_every == 0 or done == steps):
            ckpt.save_checkpoint(run_dir, done, model,
                                 {**meta_base, "history": log.history, "data_position": loader.state(),
                                  "rng": torch.get_rng_state().tolist()},
                                 optimizer, keep=config.keep_checkpoints)
        elapsed = time.perf_counter() - t0
        tokens_per_s = tokens_done / elapsed if elapsed else 0.0
        log.speed(done, loss_sum, tokens_per_s, tokens_per_s * flops_per_token / peak if peak else None)
    log.close()
    history = log.history

    elapsed = time.perf_counter() - t0
    tokens_per_s = tokens_done / elapsed if elapsed and tokens_done else None
    if world > 1:
        dist.barrier()  # rank 0's last checkpoint is written before anyone reads it
    if rank != 0:
        return {"rank": rank}  # the run's result is rank 0's
    final = ckpt.latest_checkpoint(run_dir)
    return {
        "checkpoint": str(final),
        "steps": steps,
        "tokens": budget.tokens,
        "epochs": round(epochs, 3),
        "params": model.num_params(),
        "val_bpb": history["val_bpb"][-1][1],
        "unigram_bpb": round(unigram_bits_per_byte(load_tokens(train_paths), val_tokens, byte_lengths), 5),
        "history": history,
        "tokens_per_s": tokens_per_s,
        "mfu": tokens_per_s * flops_per_token / peak if tokens_per_s and peak else None,
        "resumed_from": start,
    }


def train_distributed(config: PretrainConfig, tokenizer_path: str, train_paths: list[str], val_paths: list[str],
                      run_dir: Path) -> dict:
    """Run `train` under torchrun with `config.nproc` processes per node; return rank 0's result.

    torchrun is started with an argument list (no shell), its processes run this module, and rank 0
    writes its result to a file that is read back here.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    job = run_dir / "torchrun-job.json"
    result_file = run_dir / "torchrun-result.json"
    result_file.unlink(missing_ok=True)
    write_json(job, {"config": config.model_dump(mode="json"), "tokenizer_path": tokenizer_path,
                     "train_paths": train_paths, "val_paths": val_paths, "run_dir": str(run_dir),
                     "result": str(result_file)})
    rendezvous = (["--nnodes", str(config.nnodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", config.rdzv_endpoint]
                  if config.rdzv_endpoint else ["--standalone"])
    cmd = [sys.executable, "-m", "torch.distributed.run", *rendezvous, "--nproc-per-node", str(config.nproc),
           "-m", "tasks.train.pretrain", str(job)]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    if proc.returncode != 0 or not result_file.exists():
        raise RuntimeError(f"torchrun pretraining failed with exit code {proc.returncode}")
    return json.loads(result_file.read_text())


def _torchrun_worker(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    result = train(PretrainConfig(**job["config"]), job["tokenizer_path"], job["train_paths"], job["val_paths"],
                   Path(job["run_dir"]))
    if int(os.environ.get("RANK", 0)) == 0:
        write_json(job["result"], result)
    if dist.is_initialized():
        dist.destroy_process_group()



# --- The stage's task (tasks/core/stage.py) ---------------------------------------------------------


@stage_task("pretrain", packages=("torch", "tiktoken"))
def pretrain_task(shards: Manifest, tokenizer: Manifest, work_dir: str, config: PretrainConfig) -> Manifest:
    run_dir = output_dir(work_dir)
    args = (config, tokenizer.files[0].path, split_files(shards, "train"), split_files(shards, "val"), run_dir)
    from prefect import get_run_logger

    get_run_logger().info("pretraining: %s", describe_budget(*args[:3]))
    result = train_distributed(*args) if config.nproc * config.nnodes > 1 else \
        train(*args, progress_reporter("pretraining"))
    return checkpoint_manifest(STAGE, result)


if __name__ == "__main__":  # a torchrun worker (see train_distributed)
    _torchrun_worker(sys.argv[1])
