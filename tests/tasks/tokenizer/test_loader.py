import numpy as np
import pytest

from tasks.tokenizer.loader import TokenLoader, row_starts
from tasks.tokenizer.shardfile import write_shard_file

BOS = 999


def make_shard(path, docs):
    write_shard_file(path, np.concatenate(docs), [len(d) for d in docs], vocab_size=1000)
    return str(path)


@pytest.fixture
def shard(tmp_path):
    rng = np.random.default_rng(0)
    docs = [[BOS] + rng.integers(0, 900, rng.integers(3, 40)).tolist() for _ in range(200)]
    return make_shard(tmp_path / "train-00000.bin", docs), docs


def test_bos_aligned_rows_start_at_documents_and_never_overlap(shard):
    path, docs = shard
    loader = TokenLoader([path], batch=4, seq=16, bos_aligned=True)
    starts = [s for _, s in loader.rows]
    assert all(b - a >= 17 for a, b in zip(starts, starts[1:]))
    x, y = loader.next_batch()
    assert x.shape == (4, 16) and (x[:, 0] == BOS).all()
    assert (x[:, 1:] == y[:, :-1]).all()


def test_contiguous_rows_cover_the_stream():
    tokens = np.arange(100)
    assert row_starts(tokens, np.array([0]), 10, bos_aligned=False).tolist() == list(range(0, 90, 10))


def test_ranks_take_disjoint_rows_of_one_step(shard):
    path, _ = shard
    batches = [TokenLoader([path], batch=2, seq=8, rank=r, world_size=3).next_batch()[0] for r in range(3)]
    single = TokenLoader([path], batch=6, seq=8).next_batch()[0]
    assert (np.concatenate([b.numpy() for b in batches]) == single.numpy()).all()


def test_position_restores_exactly_across_epochs(shard):
    path, _ = shard
    a = TokenLoader([path], batch=8, seq=16)
    seen = [a.next_batch()[0] for _ in range(7)]
    state = a.state()
    rest = [a.next_batch()[0] for _ in range(30)]  # runs past the end of an epoch
    assert a.epoch >= 1
    b = TokenLoader([path], batch=8, seq=16)
    b.load_state(state)
    assert all((x == y).all() for x, y in zip(rest, [b.next_batch()[0] for _ in range(30)]))
    assert len(seen) == 7


def test_too_little_data_is_a_clear_error(tmp_path):
    path = make_shard(tmp_path / "s.bin", [[BOS, 1, 2]])
    with pytest.raises(ValueError, match="cannot fill one step"):
        TokenLoader([path], batch=2, seq=8)
    with pytest.raises(ValueError, match="rank 3 is not in a world of 2"):
        TokenLoader([path], batch=1, seq=1, rank=3, world_size=2)


def rows_of_epoch(loader: TokenLoader) -> list[tuple]:
    steps = len(loader.rows) // loader.batch
    return sorted(tuple(row) for _ in range(steps) for row in loader.next_batch()[0].tolist())


def test_a_data_seed_reorders_the_same_rows_and_resumes_exactly(shard):
    path, _ = shard
    plain, shuffled, other = (TokenLoader([path], batch=4, seq=16, shuffle_seed=s) for s in (None, 1, 2))
    first = [loader.next_batch()[0] for loader in (plain, shuffled, other)]
    assert not (first[0] == first[1]).all() and not (first[1] == first[2]).all()
    # One epoch of each holds the same rows: only their order differs (one row a step, so that no
    # epoch leaves a remainder out).
    fresh = [TokenLoader([path], batch=1, seq=16, shuffle_seed=s) for s in (None, 1)]
    assert rows_of_epoch(fresh[0]) == rows_of_epoch(fresh[1])
    # Resumed mid-run, past an epoch's end, a shuffled loader sees what the uninterrupted one does.
    a = TokenLoader([path], batch=4, seq=16, shuffle_seed=7)
    for _ in range(5):
        a.next_batch()
    state = a.state()
    rest = [a.next_batch()[0] for _ in range(40)]
    assert a.epoch >= 1
    b = TokenLoader([path], batch=4, seq=16, shuffle_seed=7)
    b.load_state(state)
    assert all((x == y).all() for x, y in zip(rest, [b.next_batch()[0] for _ in range(40)]))
