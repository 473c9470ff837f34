"""A model stage's checkpoint as a manifest, and back."""

from __future__ import annotations

from pathlib import Path

from models import checkpoint as ckpt
from tasks.core.store import Manifest, file_entry


def checkpoint_dir(manifest: Manifest) -> Path:
    """The checkpoint directory a model stage's manifest describes."""
    return Path(manifest.files[0].path).parent


def checkpoint_manifest(stage: str, result: dict, info_keys: tuple[str, ...] = ("tokens_per_s", "mfu")) -> Manifest:
    """Describe a final checkpoint: its weights file carries the content digest."""
    path = Path(result["checkpoint"])
    info = {k: result[k] for k in (*info_keys, "resumed_from") if k in result}
    # Where the checkpoint lies is the files' business, not a statistic (stats enter digests).
    stats = {k: v for k, v in result.items() if k not in info and k != "checkpoint"}
    return Manifest(stage=stage, files=[file_entry(path / ckpt.WEIGHTS), file_entry(path / ckpt.META)],
                    stats=stats, info=info)
