import random

import numpy as np

from tasks.data import dedup
from tasks.data.synthetic import _near_duplicate

TEXT = " ".join(f"word{i} and the river number {i} flows past the mill." for i in range(60))


def run_dedup(shards: list[list[dict]], tmp_path, config=dedup.DedupConfig()):
    files = []
    for i, docs in enumerate(shards):
        exact, sigs = dedup.compute_signatures(docs, config)
        path = tmp_path / f"sig{i}.npz"
        np.savez(path, exact=exact, sigs=sigs)
        files.append((i, path))
    bands = [dedup.EXACT_BAND] + list(range(config.bands))
    removed = dedup.clusters_to_remove([(b, dedup.candidate_pairs(files, b, config.rows_per_band)) for b in bands])
    return [dedup.filter_shard(docs, i, removed) for i, docs in enumerate(shards)]


def doc(i, text):
    return {"id": str(i), "url": f"u{i}", "text": text}


def test_exact_duplicates_across_shards_keep_the_first(tmp_path):
    shards = [[doc(0, TEXT), doc(1, "something else entirely, " * 20)], [doc(2, TEXT.upper())]]
    (kept0, rej0), (kept1, rej1) = run_dedup(shards, tmp_path)
    assert [d["id"] for d in kept0] == ["0", "1"]
    assert kept1 == [] and rej1[0]["reason"] == "exact_duplicate"


def test_near_duplicates_are_found_and_distinct_texts_kept(tmp_path):
    near = " ".join(_near_duplicate([TEXT], random.Random(0)))
    other = " ".join(f"item{i} is a different sentence about bread {i}." for i in range(60))
    (kept, rejected), = run_dedup([[doc(0, TEXT), doc(1, near), doc(2, other)]], tmp_path)
    assert [d["id"] for d in kept] == ["0", "2"]
    assert rejected[0]["id"] == "1" and rejected[0]["reason"] == "near_duplicate"


def test_an_earlier_runs_index_keeps_its_documents_out(tmp_path):
    cfg = dedup.DedupConfig()
    old = [doc(0, TEXT)]
    exact, sigs = dedup.compute_signatures(old, cfg)
    np.savez(tmp_path / "old.npz", exact=exact, sigs=sigs)
    bands = [dedup.EXACT_BAND] + list(range(cfg.bands))
    np.savez(tmp_path / "index.npz", **dedup.build_index([tmp_path / "old.npz"], bands, cfg.rows_per_band))

    near = " ".join(_near_duplicate([TEXT], random.Random(1)))
    other = " ".join(f"item{i} is a different sentence about bread {i}." for i in range(60))
    new = [doc(1, TEXT), doc(2, near), doc(3, other)]
    exact, sigs = dedup.compute_signatures(new, cfg)
    np.savez(tmp_path / "new.npz", exact=exact, sigs=sigs)
    earlier = {b: dedup.previous_keys([str(tmp_path / "index.npz")], b) for b in bands}
    pairs = [(b, dedup.candidate_pairs([(0, tmp_path / "new.npz")], b, cfg.rows_per_band, earlier[b])) for b in bands]
    kept, rejected = dedup.filter_shard(new, 0, dedup.clusters_to_remove(pairs))
    assert [d["id"] for d in kept] == ["3"]
    assert {r["id"]: r["reason"] for r in rejected} == {"1": "seen_in_earlier_run", "2": "seen_in_earlier_run"}


def test_signatures_are_64_bit():
    exact, sigs = dedup.compute_signatures([doc(0, TEXT)], dedup.DedupConfig())
    assert sigs.dtype == np.uint64 and sigs.shape == (1, 14 * 8) and int(sigs.max()) >= 2**32


def test_minhash_signature_is_deterministic_and_similarity_tracks_jaccard():
    cfg = dedup.DedupConfig()
    perms = dedup._permutations(cfg)
    a = dedup.minhash(TEXT, cfg, perms)
    assert (a == dedup.minhash(TEXT, cfg, dedup._permutations(cfg))).all()
    b = dedup.minhash(" ".join(f"other{i} text here now" for i in range(80)), cfg, perms)
    assert (a == b).mean() < 0.1
