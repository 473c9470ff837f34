"""What the training tests share: the micro base model's settings, and a progress callback that
kills a training run at a given step, to test resuming."""

# A micro GPT that pretrains in seconds on the CPU and reads 64 tokens (a whole synthetic exchange).
MICRO_BASE = dict(depth=2, aspect_ratio=32, head_dim=32, sequence_len=64, device_batch_size=4, lr=3e-3,
                  warmup_steps=2, eval_every=10, eval_tokens=1024, checkpoint_every=10, device="cpu")


class Crash(RuntimeError):
    pass


def crash_at(step: int):
    def progress(p: dict) -> None:
        if p["step"] == step:
            raise Crash(f"killed at step {step}")
    return progress
