"""The training loader: (inputs, targets) batches from memory-mapped token shards.

Rows of `seq + 1` tokens are laid out once, deterministically:
  * contiguous: back to back through each shard;
  * BOS-aligned: every row starts at a document start (<|bos|>); a row runs on into the next
    documents when one is short, and the next row starts at the first document boundary after it,
    so no token is seen twice in an epoch (the tail of a long document is cropped).
A step takes `batch × world_size` consecutive rows; rank r takes its own `batch` of them. With a
`shuffle_seed`, the rows of each epoch are taken in an order drawn from (seed, epoch) instead: two
runs that differ only in that seed see the same tokens in another order (an ablation's null control).
The position (epoch, cursor) is the whole state: saved with a checkpoint and restored, a resumed run
sees exactly the tokens the uninterrupted one would have, shuffled or not.
"""

from __future__ import annotations

import numpy as np
import torch

from tasks.tokenizer.shardfile import read_shard


def row_starts(tokens: np.ndarray, doc_starts: np.ndarray, seq: int, bos_aligned: bool) -> np.ndarray:
    span = seq + 1
    if not bos_aligned:
        return np.arange(0, len(tokens) - span + 1, seq, dtype=np.int64)
    starts, next_free = [], 0
    for start in doc_starts.tolist():
        if start >= next_free and start + span <= len(tokens):
            starts.append(start)
            next_free = start + span
    return np.array(starts, dtype=np.int64)


class TokenLoader:
    def __init__(self, paths: list[str], batch: int, seq: int, rank: int = 0, world_size: int = 1,
                 bos_aligned: bool = True, shuffle_seed: int | None = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size}")
        self.batch, self.seq, self.rank, self.world_size = batch, seq, rank, world_size
        self.shards = [read_shard(p) for p in paths]  # memory-mapped tokens, document starts
        self.rows = [(i, start) for i, (tokens, docs) in enumerate(self.shards)
                     for start in row_starts(tokens, docs, seq, bos_aligned).tolist()]
        if len(self.rows) < batch * world_size:
            raise ValueError(f"{len(self.rows)} rows of {seq + 1} tokens cannot fill one step of "
                             f"{batch} rows × {world_size} ranks")
        self.shuffle_seed = shuffle_seed
        self.epoch, self.cursor = 0, 0
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, its row order), made once per epoch

    def order(self) -> np.ndarray | None:
        """The row order of the current epoch; None: as laid out."""
        if self.shuffle_seed is None:
            return None
        if self._order is None or self._order[0] != self.epoch:
            rng = np.random.default_rng([self.shuffle_seed, self.epoch])
            self._order = (self.epoch, rng.permutation(len(self.rows)))
        return self._order[1]

    def state(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        step_rows = self.batch * self.world_size
        if self.cursor + step_rows > len(self.rows):  # an epoch ends on whole steps only
            self.epoch, self.cursor = self.epoch + 1, 0
        first = self.cursor + self.rank * self.batch
        order = self.order()
        picked = range(first, first + self.batch) if order is None else order[first:first + self.batch].tolist()
        rows = np.stack([self.shards[shard][0][start:start + self.seq + 1]
                         for shard, start in (self.rows[i] for i in picked)]).astype(np.int64)
        self.cursor += step_rows
        window = torch.from_numpy(rows)
        return window[:, :-1], window[:, 1:]
