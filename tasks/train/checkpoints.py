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


def checkpoint_at(path: str | Path) -> tuple[Manifest, str]:
    """A model checkpoint given by its folder (of this run or any earlier one) as a manifest, and how it
    is evaluated: "base" for a pretrained model, "chat" for a post-trained one. A reward model, or a
    folder that is not a checkpoint, is refused with one line naming it."""
    folder = Path(path)
    if not (folder / ckpt.WEIGHTS).is_file() or not (folder / ckpt.META).is_file():
        raise ValueError(f"{folder} is not a model checkpoint (no {ckpt.WEIGHTS} and {ckpt.META})")
    stage = ckpt.read_meta(folder).get("stage")
    if stage == "reward":
        raise ValueError(f"{folder} is a reward model: it scores replies, it does not write them")
    files = [file_entry(folder / ckpt.WEIGHTS), file_entry(folder / ckpt.META)]
    return Manifest(stage=stage or "pretrain", files=files), "base" if stage is None else "chat"
