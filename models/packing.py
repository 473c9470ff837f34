"""Whole conversations packed into rows of a fixed length, best fit, never cropped.

A conversation comes as a list of units, each a (token ids, 0/1 loss mask) pair that must not be
cut; SFT makes a unit of each user turn and the replies after it, so a cut between units always
leaves a reply with its question. A conversation that fits a row is kept whole. A longer one is
cut greedily between units into pieces that fit (or dropped, with `split=False`); each piece after
a conversation's first starts with `restart` (SFT: <|bos|>), as a conversation does. A unit longer
than a row on its own cannot be placed and is dropped, and so is a piece with nothing to train.
Every drop is counted, by reason.

Pieces go into rows by best fit decreasing: longest first, each into the open row with the least
room that still holds it, a new row when none does. Offline, the whole set is known, so this fills
rows better than a streaming packer, and with ties broken by input order (pieces) and row number
(rows) it is deterministic. Inside a row the pieces lie in input order, so pieces of one conversation
that share a row keep their order. The room left at a row's end is padding with mask 0: no loss.

Pure Python: no torch, so it is cheap to test on hand-made token lists.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import asdict, dataclass, field

Masked = tuple[list[int], list[int]]  # token ids and their 0/1 loss mask (1: trained); a unit or a row

# Why something was dropped (the keys of PackStats.dropped).
UNIT_TOO_LONG = "unit_longer_than_row"  # one uncuttable unit (a question and its reply) exceeds a row
CONVERSATION_TOO_LONG = "conversation_longer_than_row"  # with split=False
NOTHING_TO_TRAIN = "nothing_to_train"  # a piece whose mask is all 0 (a question left without its reply)


@dataclass
class Piece:
    """A run of consecutive units of one conversation, as it lies in a row."""

    conversation: int  # its index in the input
    units: list[int]  # the conversation's units it holds, in order
    ids: list[int]  # restart prefix (if any) and the units' tokens
    mask: list[int]
    restarted: bool = False  # starts with the restart prefix (not the conversation's first piece)


@dataclass
class PackStats:
    conversations: int = 0
    split: int = 0  # conversations kept as more than one piece
    pieces: int = 0  # pieces placed in rows
    rows: int = 0
    tokens: int = 0  # tokens placed, restart prefixes included; the rest of each row is padding
    trained_tokens: int = 0  # tokens whose mask is 1
    dropped: dict[str, int] = field(default_factory=dict)  # reason → units, conversations or pieces
    dropped_tokens: int = 0
    fill: float = 0.0  # tokens / (rows × row_tokens)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Packing:
    rows: list[Masked]  # each exactly row_tokens long, padding masked out
    layout: list[list[Piece]]  # the pieces of each row, in the order they lie there
    stats: PackStats


def cut(conversation: int, units: list[Masked], row_tokens: int, restart: list[int], split: bool,
        drops: Counter) -> list[Piece]:
    """One conversation as pieces that each fit a row, in order. What cannot be kept is counted in
    `drops` (reason → how many, and "tokens" → their tokens)."""
    if not split and sum(len(ids) for ids, _ in units) > row_tokens:
        drops[CONVERSATION_TOO_LONG] += 1
        drops["tokens"] += sum(len(ids) for ids, _ in units)
        return []
    pieces = [piece(conversation, group, units, restart)
              for group in groups_that_fit(units, row_tokens, len(restart), drops)]
    for p in pieces:
        if not any(p.mask):
            drops[NOTHING_TO_TRAIN] += 1
            drops["tokens"] += len(p.ids)
    return [p for p in pieces if any(p.mask)]


def groups_that_fit(units: list[Masked], row_tokens: int, restart: int, drops: Counter) -> list[list[int]]:
    """Consecutive units, greedily as many as fit a row (with the `restart` tokens that open every
    group but the one starting at unit 0); a unit too long on its own is dropped and closes the group."""
    groups: list[list[int]] = []
    size: int | None = None  # tokens of the open group, prefix included; None: no group open
    for u, (ids, _) in enumerate(units):
        if size is not None and size + len(ids) <= row_tokens:
            groups[-1].append(u)
            size += len(ids)
            continue
        prefix = restart if u > 0 else 0  # only the first unit starts the conversation itself
        if prefix + len(ids) > row_tokens:
            drops[UNIT_TOO_LONG] += 1
            drops["tokens"] += len(ids)
            size = None  # a group holds consecutive units: the next one starts a new group
            continue
        groups.append([u])
        size = prefix + len(ids)
    return groups


def piece(conversation: int, group: list[int], units: list[Masked], restart: list[int]) -> Piece:
    """The piece of `units` listed in `group`, prefixed with `restart` unless it starts the conversation."""
    restarted = group[0] > 0
    ids = list(restart) if restarted else []
    mask = [0] * len(ids)
    for u in group:
        ids += units[u][0]
        mask += units[u][1]
    return Piece(conversation, group, ids, mask, restarted)


def best_fit(lengths: list[int], capacity: int) -> list[int]:
    """The row of each item (all of length ≤ capacity), by best fit decreasing."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: equal lengths keep input order
    open_rows: list[tuple[int, int]] = []  # (room left, row), ascending: the tightest fit comes first
    row_of = [0] * len(lengths)
    rows = 0
    for i in order:
        at = bisect.bisect_left(open_rows, (lengths[i], -1))  # the first row with room ≥ length
        if at < len(open_rows):
            room, row = open_rows.pop(at)
        else:
            room, row = capacity, rows
            rows += 1
        row_of[i] = row
        if room > lengths[i]:
            bisect.insort(open_rows, (room - lengths[i], row))
    return row_of


def pack(conversations: list[list[Masked]], row_tokens: int, pad: int, restart: list[int] | tuple = (),
         split: bool = True) -> Packing:
    """Pack `conversations` (each a list of uncuttable units) into rows of `row_tokens` tokens,
    right-padded with `pad`. See the module's docstring for the rules."""
    if row_tokens < len(restart) + 1:
        raise ValueError(f"a row of {row_tokens} tokens cannot hold the restart prefix and one token")
    drops: Counter = Counter()
    pieces = [p for c, units in enumerate(conversations)
              for p in cut(c, units, row_tokens, list(restart), split, drops)]
    row_of = best_fit([len(p.ids) for p in pieces], row_tokens)
    layout: list[list[Piece]] = [[] for _ in range(max(row_of, default=-1) + 1)]
    for p, row in zip(pieces, row_of):  # pieces are in input order, so each row's are too
        layout[row].append(p)
    rows = [fill_row(row, row_tokens, pad) for row in layout]
    tokens = sum(len(p.ids) for p in pieces)
    split_conversations = Counter(p.conversation for p in pieces)
    stats = PackStats(conversations=len(conversations), split=sum(n > 1 for n in split_conversations.values()),
                      pieces=len(pieces), rows=len(rows), tokens=tokens,
                      trained_tokens=sum(sum(p.mask) for p in pieces),
                      dropped={k: v for k, v in sorted(drops.items()) if k != "tokens"},
                      dropped_tokens=drops["tokens"],
                      fill=round(tokens / (len(rows) * row_tokens), 4) if rows else 0.0)
    return Packing(rows=rows, layout=layout, stats=stats)


def fill_row(pieces: list[Piece], row_tokens: int, pad: int) -> Masked:
    """The pieces end to end, then padding (mask 0) up to `row_tokens`."""
    ids = [t for p in pieces for t in p.ids]
    mask = [m for p in pieces for m in p.mask]
    padding = row_tokens - len(ids)
    return ids + [pad] * padding, mask + [0] * padding
