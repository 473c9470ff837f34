"""The gpu preset's pretraining step on one GPU, measured in one short run: throughput, MFU, memory,
compile time, where the time goes, and a few post-training (SFT) steps of the same model.

    python benchmarks/gpu_pretrain.py --out DIR                       # the gpu preset on CUDA
    python benchmarks/gpu_pretrain.py --device cpu --depth 2 --seq 128 --vocab 1024 --batch 2 \\
        --steps 5 --no-compile --out /tmp/gpu-try                     # a try-out in seconds, no GPU

What runs is pretraining's own step (tasks/train/pretrain.py): models/gpt.py's GPT at the preset's
size, make_optimizer (Muon for the blocks' matrices and AdamW for the rest, as the preset asks), the
LR schedule, gradient accumulation over micro-batches, autocast and torch.compile. The sizes and
settings come from flows/presets/gpu.yaml (GPU_PRESET below when yaml or the file is missing); the
flags override them. The tokens are random ids: throughput does not depend on what they say (the
loss stays near ln(vocab)). Batches wait in pinned host memory and are copied without blocking.

The post-training steps are the SFT stage's (tasks/train/sft.py, tasks/train/loop.py): conversations
packed into masked rows (models/packing.py; random ids, the replies' tokens trained), the masked loss
of models/batches.py, AdamW, gradient clipping, and, as the stage runs today, eager and in float32.

Only models/ and torch are imported (and yaml when present): the GPU machine has no Prefect or
pydantic, so tasks/ cannot be imported there. Everything is printed and written to --out:
summary.json, profile_ops.txt (the profiler's table) and trace.json.gz (chrome://tracing, Perfetto).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import gzip
import json
import random
import resource
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.batches import masked_lm_loss  # noqa: E402
from models.gpt import GPT, GPTConfig  # noqa: E402
from models.optim import apply_schedule, lr_multiplier, make_adamw, make_optimizer  # noqa: E402
from models.packing import pack  # noqa: E402

PRESET = ROOT / "flows" / "presets" / "gpu.yaml"
# The gpu preset's pretraining and SFT settings (its yaml over the stages' defaults), for when the
# yaml cannot be read; tests/benchmarks checks they still agree with the preset and PretrainConfig.
GPU_PRESET = {"depth": 12, "aspect_ratio": 64, "head_dim": 128, "sequence_len": 2048, "vocab_size": 32768,
              "device_batch_size": 32, "total_batch_tokens": 524288, "optimizer": "muon", "lr": 3e-3,
              "muon_lr": 0.02, "weight_decay": 0.0, "warmup_steps": 0, "warmdown_frac": 0.2,
              "tokens_per_param": 12, "sft_batch_size": 32, "sft_lr": 1e-3}
# Dense bf16 peak FLOP/s, as tasks/train/pretrain.py has them (which cannot be imported here).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 125e12}
TOP_OPS = 15


def preset_values(path: Path) -> tuple[dict, str]:
    """GPU_PRESET updated from the preset file; and where the values came from."""
    values = dict(GPU_PRESET)
    try:
        import yaml

        data = yaml.safe_load(path.read_text())
    except (ImportError, OSError) as err:
        return values, f"built-in values ({path.name} not read: {err})"
    train = data.get("train", {})
    values.update({k: v for k, v in train.get("pretrain", {}).items() if k in values})
    values["vocab_size"] = data.get("tokenizer", {}).get("bpe", {}).get("vocab_size", values["vocab_size"])
    sft = train.get("sft", {})
    values["sft_batch_size"] = sft.get("batch_size", values["sft_batch_size"])
    values["sft_lr"] = sft.get("lr", values["sft_lr"])
    return values, str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"gpu_pretrain: --device cuda asked, but torch {torch.__version__} sees no CUDA device "
                         f"(built with CUDA {torch.version.cuda}); try --device cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SyntheticBatches:
    """Random token rows shaped as the loader's windows (inputs and next-token targets), kept in pinned
    host memory and copied with non_blocking, so the copy overlaps the GPU's work."""

    def __init__(self, vocab: int, batch: int, seq: int, device: torch.device, count: int = 4):
        gen = torch.Generator().manual_seed(0)
        self.device, self.pool, self.drawn = device, [], 0
        for _ in range(count):
            window = torch.randint(vocab, (batch, seq + 1), generator=gen)
            x, y = window[:, :-1].contiguous(), window[:, 1:].contiguous()
            self.pool.append((x.pin_memory(), y.pin_memory()) if device.type == "cuda" else (x, y))

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.pool[self.drawn % len(self.pool)]
        self.drawn += 1
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def chat_rows(vocab: int, row_tokens: int, rows: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """At least `rows` packed SFT rows: conversations of 1-4 exchanges (a question of up to row/8 tokens,
    mask 0, and a reply of up to row/4, mask 1), token 0 opening each, packed as the SFT stage packs."""
    rng = random.Random(seed)

    def exchange(first: bool):
        question, reply = rng.randint(4, max(4, row_tokens // 8)), rng.randint(4, max(4, row_tokens // 4))
        ids = [0] * first + [rng.randrange(vocab) for _ in range(question + reply)]
        return ids, [0] * (first + question) + [1] * reply

    conversations = []
    while True:
        conversations += [[exchange(i == 0) for i in range(rng.randint(1, 4))] for _ in range(4 * rows)]
        packed = pack(conversations, row_tokens, pad=0, restart=[0])
        if len(packed.rows) >= rows:
            return packed.rows


def memory(device: torch.device) -> dict:
    gib = 2 ** 30
    out = {"host_max_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / gib, 2)}
    if device.type == "cuda":
        out.update(peak_allocated_gib=round(torch.cuda.max_memory_allocated(device) / gib, 2),
                   peak_reserved_gib=round(torch.cuda.max_memory_reserved(device) / gib, 2),
                   device_total_gib=round(torch.cuda.get_device_properties(device).total_memory / gib, 2))
    return out


def dynamo_counts() -> dict:
    """Graphs compiled and graph breaks met so far (dynamo's counters, the ones TORCH_LOGS reports)."""
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]), "graph_breaks": sum(counters["graph_break"].values()),
            "break_reasons": sorted(counters["graph_break"])[:5]}


def timed(step, index: int, device: torch.device) -> tuple[float, float]:
    sync(device)
    t0 = time.perf_counter()
    loss = step(index)
    sync(device)
    return time.perf_counter() - t0, loss


def profile(step, first: int, steps: int, device: torch.device, out: Path) -> dict:
    """The profiler over `steps` steady steps: the heaviest ops by device time (CPU time on a CPU run)."""
    from torch.profiler import ProfilerActivity

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        wall, _ = timed(lambda i: [step(first + k) for k in range(steps)], 0, device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = prof.key_averages()
    (out / "profile_ops.txt").write_text(events.table(sort_by=key, row_limit=TOP_OPS * 2))
    # On a GPU, the kernels alone: an op's device time is its kernels', so listing both would count it twice.
    kernels = [e for e in events if device.type != "cuda" or e.device_type == torch.autograd.DeviceType.CUDA]
    top = sorted(kernels, key=lambda e: getattr(e, key), reverse=True)[:TOP_OPS]
    trace = out / "trace.json"
    prof.export_chrome_trace(str(trace))
    with trace.open("rb") as raw, gzip.open(f"{trace}.gz", "wb") as packed:
        shutil.copyfileobj(raw, packed)
    trace.unlink()
    return {"steps": steps, "wall_s": round(wall, 3), "sorted_by": key, "table": "profile_ops.txt",
            "trace": "trace.json.gz",
            "top": [{"name": e.key[:120], "calls": e.count, "ms_per_step": round(getattr(e, key) / 1e3 / steps, 3),
                     "share_of_wall": round(getattr(e, key) / 1e6 / wall, 4)} for e in top]}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="folder for summary.json, the profile and the trace")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--preset", type=Path, default=PRESET, help="the preset the sizes and settings come from")
    p.add_argument("--depth", type=int, help="model depth (preset: 12)")
    p.add_argument("--seq", type=int, help="sequence length (preset: 2048)")
    p.add_argument("--vocab", type=int, help="vocabulary size (preset: 32768)")
    p.add_argument("--batch", type=int, help="rows per micro-batch, pretraining's and SFT's (preset: 32, 32)")
    p.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step (preset: its "
                                                  "total_batch_tokens over its batch × seq: 8)")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps, after the warm-up")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first; the first one compiles")
    p.add_argument("--profile-steps", type=int, default=1, help="optimizer steps under the profiler (0: none)")
    p.add_argument("--post-steps", type=int, default=3, help="timed SFT steps, after one untimed (0: none)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--dtype", choices=["bfloat16", "float32"],
                   help="autocast dtype (default: bfloat16 on CUDA, float32 on a CPU, as pretraining's auto)")
    p.add_argument("--post-dtype", choices=["bfloat16", "float32"], default="float32",
                   help="autocast dtype of the SFT steps (the SFT stage has none: float32)")
    p.add_argument("--peak-flops", type=float, help="device peak FLOP/s for MFU (default: known GPUs' bf16 peak)")
    args = p.parse_args(argv)
    if min(args.steps - 1, args.warmup, args.profile_steps, args.post_steps) < 0:
        p.error("--steps must be at least 1; --warmup, --profile-steps and --post-steps at least 0")
    if args.compile and args.warmup < 1:
        p.error("--compile needs --warmup of at least 1: the first step compiles and is not timed")
    return args


def autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()


def pretraining(model: GPT, preset: dict, run: dict, args, device: torch.device):
    """The step of tasks/train/pretrain.py's loop, as a function of the step number returning its loss."""
    optimizer = make_optimizer(model, preset["optimizer"], preset["lr"], preset["muon_lr"], preset["weight_decay"])
    step_model = torch.compile(model, backend=args.compile_backend) if args.compile else model
    batches = SyntheticBatches(run["vocab"], run["device_batch"], run["sequence_len"], device)
    precision, accum = autocast(device, getattr(torch, run["dtype"])), run["grad_accum"]

    def train_step(step: int) -> float:
        multiplier = lr_multiplier(step, run["planned_schedule_steps"], preset["warmup_steps"], preset["warmdown_frac"])
        apply_schedule(optimizer, multiplier)
        loss_sum = 0.0
        for _ in range(accum):
            x, y = batches.next()
            with precision:
                loss = step_model(x, y) / accum
            loss.backward()
            loss_sum += loss.detach()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss_sum)  # the host waits for each step, as pretraining's loss log does

    return train_step


def measure_pretraining(train_step, run: dict, args, device: torch.device, peak: float | None) -> dict:
    warm = [timed(train_step, i, device) for i in range(args.warmup)]
    runs = [timed(train_step, args.warmup + i, device) for i in range(args.steps)]
    times = [t for t, _ in runs]
    median, tokens_per_s = statistics.median(times), run["tokens_per_step"] * len(times) / sum(times)
    return {"warmup_step_s": [round(t, 3) for t, _ in warm],
            "compile_s": round(warm[0][0] - median, 2) if args.compile else None,  # what the first step took extra
            "step_s_median": round(median, 4), "step_s_min": round(min(times), 4), "step_s_max": round(max(times), 4),
            "tokens_per_s": round(tokens_per_s),
            "mfu": round(tokens_per_s * run["flops_per_token"] / peak, 4) if peak else None, "peak_flops": peak,
            "loss_first": round(runs[0][1], 4), "loss_last": round(runs[-1][1], 4), "memory": memory(device),
            **({"dynamo": dynamo_counts()} if args.compile else {})}


def post_training(model: GPT, preset: dict, run: dict, args, device: torch.device) -> dict:
    """SFT steps as the SFT stage takes them: batch_size packed rows (seq + 1 tokens: seq inputs, each
    with the next token as its target), masked loss, backward, clip at 1.0, AdamW, on the eager model."""
    batch, seq = args.batch or preset["sft_batch_size"], run["sequence_len"]
    rows = chat_rows(run["vocab"], seq + 1, 2 * batch)
    optimizer, rng = make_adamw(model, preset["sft_lr"]), random.Random(0)
    precision = autocast(device, getattr(torch, args.post_dtype))

    def sft_step(_step: int) -> float:
        with precision:
            loss = masked_lm_loss(model, rng.sample(rows, batch), 0, device)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    timed(sft_step, 0, device)  # the first step also makes the optimizer's state
    runs = [timed(sft_step, 1 + i, device) for i in range(args.post_steps)]
    times = [t for t, _ in runs]
    trained = sum(sum(mask[1:]) for _, mask in rows) / sum(len(ids) - 1 for ids, _ in rows)
    return {"rows": batch, "row_tokens": seq + 1, "dtype": args.post_dtype, "compile": False,
            "steps": len(times), "step_s_median": round(statistics.median(times), 4),
            "tokens_per_s": round(batch * seq * len(times) / sum(times)), "trained_fraction": round(trained, 3),
            "loss_last": round(runs[-1][1], 4), "memory": memory(device)}


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    device = pick_device(args.device)
    preset, source = preset_values(args.preset)
    args.out.mkdir(parents=True, exist_ok=True)
    # `timeout` stops a run with SIGTERM: leave through the finally below, which saves what was measured.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("gpu_pretrain: stopped by SIGTERM (a timeout?)"))
    started = time.perf_counter()

    torch.manual_seed(0)
    depth, seq = args.depth or preset["depth"], args.seq or preset["sequence_len"]
    vocab = args.vocab or preset["vocab_size"]
    model = GPT(GPTConfig.from_depth(depth, vocab, seq, aspect_ratio=preset["aspect_ratio"],
                                     head_dim=preset["head_dim"])).to(device)
    run = {"device_batch": args.batch or preset["device_batch_size"], "sequence_len": seq, "vocab": vocab,
           "grad_accum": args.grad_accum or max(1, preset["total_batch_tokens"]
                                                // (preset["device_batch_size"] * preset["sequence_len"])),
           "optimizer": preset["optimizer"],
           "dtype": args.dtype or ("bfloat16" if device.type == "cuda" else "float32"),
           "compile": args.compile, "compile_backend": args.compile_backend if args.compile else None,
           "warmup_steps": args.warmup, "timed_steps": args.steps, "flops_per_token": model.flops_per_token()}
    run["tokens_per_step"] = run["device_batch"] * seq * run["grad_accum"]
    # The whole preset run's schedule, so these steps get the learning rate its first steps get.
    run["planned_schedule_steps"] = max(args.warmup + args.steps + args.profile_steps,
                                        int(preset["tokens_per_param"] * model.num_params() / run["tokens_per_step"]))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    peak = args.peak_flops or next((f for k, f in PEAK_BF16_FLOPS.items() if device.type == "cuda" and k in name), None)
    summary = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda, "preset": source,
               "data": "synthetic: random token ids (throughput only); SFT rows packed from random conversations",
               "model": {"depth": depth, "n_embd": model.config.n_embd, "n_head": model.config.n_head,
                         "params": model.num_params()},
               "run": run}

    def save() -> None:
        summary.pop("total_s", None)  # last in the file, whenever it is written
        summary["total_s"] = round(time.perf_counter() - started, 2)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    print(f"model: depth {depth}, width {model.config.n_embd}, {model.config.n_head} heads, vocab {vocab}, seq {seq}: "
          f"{model.num_params() / 1e6:.1f}M parameters, {run['flops_per_token'] / 1e6:.0f} MFLOP/token")
    print(f"step: {run['grad_accum']} × {run['device_batch']} rows = {run['tokens_per_step']:,} tokens, "
          f"{run['optimizer']}, {run['dtype']}, compile {args.compile}, on {name}  [{source}]", flush=True)
    try:
        train_step = pretraining(model, preset, run, args, device)
        summary["pretrain"] = p = measure_pretraining(train_step, run, args, device, peak)
        save()
        print(f"compile: {p['compile_s']} s (first step: {p['warmup_step_s'][0]} s)" if args.compile else
              "compile: off")
        print(f"steady: {p['step_s_median'] * 1e3:.1f} ms/step (median of {args.steps}), {p['tokens_per_s']:,} "
              f"tokens/s, MFU {p['mfu'] if peak else 'n/a (no known peak)'}; memory {p['memory']}", flush=True)

        if args.profile_steps:
            summary["profile"] = q = profile(train_step, args.warmup + args.steps, args.profile_steps, device, args.out)
            save()
            print(f"profile ({q['sorted_by']}, {args.profile_steps} steps in {q['wall_s']} s):")
            for op in q["top"][:8]:
                print(f"  {op['share_of_wall']:7.1%}  {op['ms_per_step']:9.2f} ms/step  {op['name'][:90]}")

        if args.post_steps:
            del train_step  # and with it pretraining's optimizer: SFT starts from the weights with its own
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            try:
                summary["post_training"] = q = post_training(model, preset, run, args, device)
            except torch.OutOfMemoryError as err:  # a finding about the SFT stage's settings: keep the rest
                summary["post_training"] = q = {"error": f"out of memory: {str(err)[:300]}", "memory": memory(device)}
            save()
            print(f"SFT: {q['error']}" if "error" in q else
                  f"SFT ({q['dtype']}, eager): {q['step_s_median'] * 1e3:.1f} ms/step, {q['tokens_per_s']:,} tokens/s "
                  f"({q['trained_fraction']:.0%} of targets trained), memory {q['memory']}")
    except BaseException as err:  # keep what was measured, and say where it stopped
        summary["error"] = f"{type(err).__name__}: {err}"[:500]
        raise
    finally:
        save()
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
