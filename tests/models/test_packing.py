"""Best-fit packing on hand-made token lists (where the packing is worked out by hand), invariants on
random ones, and the turn-by-turn rendering the packer cuts conversations with."""

from __future__ import annotations

import random

import pytest

from models.chat import ChatTokens, render_conversation, render_turns
from models.packing import CONVERSATION_TOO_LONG, NOTHING_TO_TRAIN, UNIT_TOO_LONG, best_fit, pack
from tasks.tokenizer.tokenize import load_tokenizer

PAD, BOS = 0, 1


def unit(first: int, n: int, trained: int | None = None) -> tuple[list[int], list[int]]:
    """n consecutive ids from `first`; the last `trained` of them (default: all but the first) in the loss."""
    trained = n - 1 if trained is None else trained
    return list(range(first, first + n)), [0] * (n - trained) + [1] * trained


def test_each_item_goes_to_the_tightest_row_that_holds_it():
    # 8 → row 0 (room 2), 6 → row 1 (room 4), 3 → row 1 (room 1); the 1 fits both open rows and
    # goes to row 1, the tighter one (first fit would put it in row 0).
    assert best_fit([8, 6, 3, 1], 10) == [0, 1, 1, 1]
    # Equal lengths are placed in input order, equal rooms fill the older row first.
    assert best_fit([5, 5, 5], 10) == [0, 0, 1]
    assert best_fit([6, 6, 4], 10) == [0, 1, 0]
    assert best_fit([], 10) == []


def test_a_hand_packed_example():
    conversations = [
        [unit(100, 6)],                                 # c0: 6 tokens
        [unit(200, 4)],                                 # c1: 4
        [unit(300, 5), unit(305, 5)],                   # c2: 10, exactly a row: kept whole
        [unit(400, 4), unit(404, 5), unit(409, 6)],     # c3: 15 → units 0-1 (9), then <bos> + unit 2 (7)
        [unit(500, 11), unit(511, 3)],                  # c4: unit 0 alone exceeds the row; <bos> + unit 1 (4)
    ]
    packed = pack(conversations, row_tokens=10, pad=PAD, restart=[BOS])
    # Longest first: c2 (10) fills row 0; c3's 9 and 7 open rows 1 and 2; c0's 6 fits neither, row 3;
    # c1's 4 fits row 3 exactly (rooms 1, 3, 4); c4's 4 fits nowhere, row 4.
    assert [[(p.conversation, p.units) for p in row] for row in packed.layout] == [
        [(2, [0, 1])], [(3, [0, 1])], [(3, [2])], [(0, [0]), (1, [0])], [(4, [1])]]
    ids, mask = packed.rows[2]
    assert ids == [BOS, *range(409, 415), PAD, PAD, PAD]
    assert mask == [0, 0, 1, 1, 1, 1, 1, 0, 0, 0]  # the restart token and the padding are not trained
    assert packed.rows[3][0] == [*range(100, 106), *range(200, 204)]
    stats = packed.stats
    assert (stats.conversations, stats.split, stats.pieces, stats.rows) == (5, 1, 6, 5)
    assert stats.tokens == 10 + 9 + 7 + 6 + 4 + 4
    assert stats.dropped == {UNIT_TOO_LONG: 1} and stats.dropped_tokens == 11
    assert stats.fill == 0.8  # 40 tokens in 5 rows of 10


def test_without_splitting_a_conversation_longer_than_a_row_is_dropped():
    conversations = [[unit(100, 4), unit(104, 4)], [unit(200, 6), unit(206, 5)]]
    packed = pack(conversations, row_tokens=10, pad=PAD, restart=[BOS], split=False)
    assert [[p.conversation for p in row] for row in packed.layout] == [[0]]
    assert packed.stats.dropped == {CONVERSATION_TOO_LONG: 1} and packed.stats.dropped_tokens == 11
    assert packed.stats.fill == 0.8


def test_a_piece_with_nothing_to_train_is_dropped():
    # The second unit (a question nobody answered) is cut off into a piece of its own with no loss.
    conversations = [[unit(100, 8), unit(108, 4, trained=0)]]
    packed = pack(conversations, row_tokens=10, pad=PAD, restart=[BOS])
    assert [[p.units for p in row] for row in packed.layout] == [[[0]]]
    assert packed.stats.dropped == {NOTHING_TO_TRAIN: 1} and packed.stats.dropped_tokens == 5  # <bos> too


def test_a_row_too_short_for_the_restart_prefix_is_refused():
    with pytest.raises(ValueError, match="cannot hold the restart prefix"):
        pack([[unit(100, 3)]], row_tokens=2, pad=PAD, restart=[BOS, BOS])


def random_conversations(rng: random.Random, n: int) -> list[list[tuple[list[int], list[int]]]]:
    """Conversations of 1 to 4 units of 1 to 30 tokens; every token id is distinct (from 10 up)."""
    next_id, out = 10, []
    for _ in range(n):
        units = []
        for _ in range(rng.randint(1, 4)):
            size = rng.randint(1, 30)
            units.append((list(range(next_id, next_id + size)), [int(rng.random() < 0.6) for _ in range(size)]))
            next_id += size
        out.append(units)
    return out


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("split", [True, False])
def test_invariants_on_random_conversations(seed, split):
    rng = random.Random(seed)
    conversations = random_conversations(rng, rng.randint(0, 60))
    row_tokens = rng.randint(8, 50)
    packed = pack(conversations, row_tokens, pad=PAD, restart=[BOS], split=split)
    assert packed == pack(conversations, row_tokens, pad=PAD, restart=[BOS], split=split)  # deterministic

    # Every row is exactly a row long, its pieces fit, and it is padding (untrained) after them.
    for (ids, mask), pieces in zip(packed.rows, packed.layout):
        used = sum(len(p.ids) for p in pieces)
        assert len(ids) == len(mask) == row_tokens and 0 < used <= row_tokens
        assert ids[used:] == [PAD] * (row_tokens - used) and not any(mask[used:])

    # Every kept token appears exactly once, with its mask; a piece is a run of whole units in order.
    placed = [t for ids, _ in packed.rows for t in ids if t >= 10]
    assert len(placed) == len(set(placed))
    kept = {}
    for pieces in packed.layout:
        for p in pieces:
            units = conversations[p.conversation]
            assert p.units == list(range(p.units[0], p.units[0] + len(p.units)))
            body = [t for u in p.units for t in units[u][0]]
            assert p.ids == ([BOS] if p.units[0] > 0 else []) + body
            assert p.mask == [0] * (len(p.ids) - len(body)) + [m for u in p.units for m in units[u][1]]
            assert any(p.mask)
            kept.update({(p.conversation, u): p for u in p.units})
    assert sorted(placed) == sorted(t for (c, u) in kept for t in conversations[c][u][0])

    # Pieces of one conversation that share a row lie in their order; the cut is greedy.
    for pieces in packed.layout:
        order = [(p.conversation, p.units[0]) for p in pieces]
        assert order == sorted(order)

    # What is not kept is counted as dropped, and the stats add up.
    total = sum(len(ids) for units in conversations for ids, _ in units)
    restarts = sum(p.restarted for row in packed.layout for p in row)
    stats = packed.stats
    assert stats.tokens == len(placed) + restarts
    assert stats.dropped_tokens >= total - len(placed)  # and the <bos> of dropped untrained pieces
    assert (stats.dropped_tokens > 0) == bool(stats.dropped)
    assert stats.rows == len(packed.rows) and stats.pieces == sum(len(row) for row in packed.layout)
    assert stats.fill == (round(stats.tokens / (stats.rows * row_tokens), 4) if stats.rows else 0.0)
    if not split:
        assert all(sum(len(ids) for ids, _ in conversations[p.conversation]) <= row_tokens
                   for row in packed.layout for p in row)
    # Best fit never leaves two rows that could have been one.
    used = sorted(sum(len(p.ids) for p in row) for row in packed.layout)
    assert len(used) < 2 or used[0] + used[1] > row_tokens


CONVERSATIONS = [
    [],
    [{"role": "user", "content": "What is 2 times 3?"}],
    [{"role": "user", "content": "What is 2 times 3?"},
     {"role": "assistant", "content": [{"type": "text", "text": "Let me see."}, {"type": "python", "text": "2*3"},
                                       {"type": "output", "text": "6"}, {"type": "text", "text": "It is 6."}]},
     {"role": "user", "content": "And that plus 1?"}, {"role": "assistant", "content": "It is 7."}],
    [{"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Hi."}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_the_turns_joined_are_the_rendered_conversation(tokenizer_path, messages):
    chat = ChatTokens(load_tokenizer(tokenizer_path))
    turns = render_turns(chat, messages)
    assert len(turns) == max(1, len(messages))
    assert ([t for ids, _ in turns for t in ids], [m for _, mask in turns for m in mask]) == \
        render_conversation(chat, messages)
    assert all(len(ids) == len(mask) for ids, mask in turns)
    starts = [chat.user_start if m["role"] == "user" else chat.assistant_start for m in messages]
    assert [ids[0] for ids, _ in turns[1:]] == starts[1:] and turns[0][0][:1] == [chat.bos]
