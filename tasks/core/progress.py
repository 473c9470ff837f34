"""A training stage's progress, shown in the Prefect UI while it runs.

The training loops take any callable; only the @task wrappers pass this one, so the loops import
without Prefect.
"""

from __future__ import annotations

from typing import Callable


def progress_reporter(description: str) -> Callable[[dict], None]:
    """A Prefect progress artifact, updated every few percent, plus a log line."""
    from prefect import get_run_logger
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    logger = get_run_logger()
    artifact = create_progress_artifact(0.0, description=description)
    last = [-1]

    def report(p: dict) -> None:
        percent = int(100 * p["step"] / p["steps"])
        if percent // 5 != last[0] // 5 or p["step"] == p["steps"]:
            last[0] = percent
            update_progress_artifact(artifact, float(percent))
            speed = f" ({p['tokens_per_s']:.0f} tok/s)" if p.get("tokens_per_s") else ""
            speed += f" MFU {100 * p['mfu']:.1f}%" if p.get("mfu") else ""
            logger.info("%s step %d/%d loss %.4f%s", description, p["step"], p["steps"], p["loss"], speed)
        held_out = {k: v for k, v in p.items() if k.startswith("heldout_")}  # a periodic evaluation's results
        if held_out:
            logger.info("%s step %d/%d %s", description, p["step"], p["steps"],
                        " ".join(f"held-out {k.removeprefix('heldout_')} {v:.4f}" for k, v in held_out.items()))

    return report
