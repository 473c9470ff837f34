#!/usr/bin/env bash
# The GPU measurement exactly as it is sent to a GPU machine (an H100 or H200 whose python3 has torch
# with CUDA; this project is not installed there), run from the repository root:
#
#     bash benchmarks/run_gpu_proof.sh        # writes into $OUT (default: /tmp/gpu-proof)
#
# The gpu preset's model (depth 12, bfloat16 autocast, torch.compile, Muon + AdamW, 8 micro-batches of
# 32 × 2048 tokens = 524,288 tokens per optimizer step), then a profile and a few SFT steps; see
# benchmarks/gpu_pretrain.py. It must end within 4 minutes of an H100, compile included:
# - compile: about a minute on a fresh machine (no inductor cache), the forward and backward graphs once;
# - 3 warm-up + 10 timed steps: a step is 524,288 tokens × 0.89 GFLOP ≈ 465 TFLOP, 1.2 s at 40% MFU of
#   the H100's 989 TFLOP/s (1.6 s at 30%), so about 20 s; 10 timed steps give a steady median;
# - 1 profiled step (8 micro-batches is plenty of kernels to rank) and the trace written: a few seconds;
# - 1 + 3 SFT steps of 32 rows × 2048 tokens, eager and in float32 as the stage runs them: ~58 TFLOP
#   each without tensor cores, about 1.5 s each.
# About two minutes in all; the timeout stops it at 220 s, and since summary.json is rewritten after
# each part, a run stopped late keeps the parts it finished. Five files come back: summary.json,
# profile_ops.txt, trace.json.gz, log.txt and gpu.txt.
set -euo pipefail
OUT="${OUT:-/tmp/gpu-proof}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi > "$OUT/gpu.txt" 2>&1 || true
timeout -k 10 220 "${PYTHON:-python3}" benchmarks/gpu_pretrain.py --out "$OUT" --device cuda \
    --depth 12 --dtype bfloat16 --compile --warmup 3 --steps 10 --profile-steps 1 --post-steps 3 \
    2>&1 | tee "$OUT/log.txt"
