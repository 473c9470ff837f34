"""benchmarks/gpu_pretrain.py, tried as it is tried before a GPU is spent on it: a tiny CPU run end to
end, the one-line refusal when no GPU is there, and its built-in copy of the gpu preset and of the
peak FLOP/s table (kept because tasks/ cannot be imported on the GPU machine) still matching the originals."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_pretrain.py"
VOCAB, SEQ, BATCH, ACCUM = 256, 64, 2, 2


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_pretrain", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-pretrain")
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--depth", "1", "--seq", str(SEQ), "--vocab", str(VOCAB),
           "--batch", str(BATCH), "--grad-accum", str(ACCUM), "--warmup", "1", "--steps", "2", "--profile-steps", "1",
           "--post-steps", "1", "--no-compile", "--out", str(out)]
    # One thread: on a shared machine, two threads fighting other processes' can take ten times as long.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc.stdout


def test_a_tiny_cpu_run_reports_every_part(tiny_run):
    out, stdout = tiny_run
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(stdout.strip().splitlines()[-1]) == summary  # the same summary is printed last
    assert "error" not in summary and summary["total_s"] > 0
    assert summary["preset"] == "flows/presets/gpu.yaml" and summary["data"].startswith("synthetic")

    from models.gpt import GPT, GPTConfig

    model = GPT(GPTConfig.from_depth(1, VOCAB, SEQ, aspect_ratio=64, head_dim=128))
    assert summary["model"]["params"] == model.num_params()
    run = summary["run"]
    assert run["flops_per_token"] == model.flops_per_token()
    assert run["tokens_per_step"] == BATCH * SEQ * ACCUM and run["optimizer"] == "muon" and run["dtype"] == "float32"
    assert run["compile"] is False and run["planned_schedule_steps"] >= 4

    pre = summary["pretrain"]
    assert pre["compile_s"] is None and pre["mfu"] is None  # no compile asked; no known peak on a CPU
    assert len(pre["warmup_step_s"]) == 1 and 0 < pre["step_s_min"] <= pre["step_s_median"] <= pre["step_s_max"]
    # Two steps' tokens over their time: between what the slowest and the fastest step alone would give.
    assert run["tokens_per_step"] / pre["step_s_max"] <= pre["tokens_per_s"] * 1.01
    assert pre["tokens_per_s"] <= run["tokens_per_step"] / pre["step_s_min"] * 1.01
    # Random tokens and an output layer started near zero: the loss is about ln(vocab).
    assert abs(pre["loss_first"] - math.log(VOCAB)) < 0.5 and math.isfinite(pre["loss_last"])
    assert pre["memory"]["host_max_rss_gib"] > 0

    prof = summary["profile"]
    assert prof["steps"] == 1 and prof["sorted_by"] == "self_cpu_time_total" and prof["top"]
    shares = [op["share_of_wall"] for op in prof["top"]]
    assert shares == sorted(shares, reverse=True) and 0 < shares[0] <= 1
    assert any("mm" in op["name"] for op in prof["top"])  # matrix products are among the heaviest ops
    assert "Name" in (out / prof["table"]).read_text()
    assert json.loads(gzip.decompress((out / prof["trace"]).read_bytes()))["traceEvents"]

    post = summary["post_training"]
    assert post["rows"] == BATCH and post["row_tokens"] == SEQ + 1 and post["dtype"] == "float32"
    assert 0 < post["trained_fraction"] < 1 and post["tokens_per_s"] > 0 and math.isfinite(post["loss_last"])
    assert "steady:" in stdout and "profile (" in stdout and "SFT (" in stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is there")
def test_asking_for_cuda_without_one_fails_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match="--device cuda asked, but torch .* sees no CUDA device"):
        load_script().main(["--device", "cuda", "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_the_built_in_copies_match_the_preset_and_pretraining():
    yaml = pytest.importorskip("yaml")
    from tasks.train.pretrain import PEAK_BF16_FLOPS, PretrainConfig
    from tasks.train.sft import SftConfig

    script = load_script()
    assert script.PEAK_BF16_FLOPS == PEAK_BF16_FLOPS
    preset = yaml.safe_load(script.PRESET.read_text())
    pretrain, sft = PretrainConfig(**preset["train"]["pretrain"]), SftConfig(**preset["train"]["sft"])
    expected = {k: getattr(pretrain, k) for k in script.GPU_PRESET if hasattr(pretrain, k)}
    expected.update(vocab_size=preset["tokenizer"]["bpe"]["vocab_size"], sft_batch_size=sft.batch_size,
                    sft_lr=sft.lr)
    assert script.GPU_PRESET == expected
    assert script.preset_values(script.PRESET) == (expected, "flows/presets/gpu.yaml")
