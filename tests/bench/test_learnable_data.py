"""The benchmarks' learnable synthetic data (quality comparisons) has the structure it promises."""

from __future__ import annotations

from benchmarks.components import LEARNABLE_FOLLOW, synthetic_dataset


def test_learnable_data_follows_one_fixed_map_most_of_the_time():
    data = synthetic_dataset(None, seq_len=512, num_samples=4, vocab_size=5000, learnable=64)
    successors: dict[int, dict[int, int]] = {}
    for i in range(len(data)):
        tokens = data[i]["tokens"]
        assert len(tokens) == 512 and data[i]["labels"] == tokens
        for a, b in zip(tokens, tokens[1:]):
            successors.setdefault(a, {}).setdefault(b, 0)
            successors[a][b] += 1
    assert len(successors) <= 64  # only the map's symbols occur
    followed = sum(max(c.values()) for c in successors.values()) / sum(sum(c.values()) for c in successors.values())
    assert abs(followed - LEARNABLE_FOLLOW) < 0.05  # one successor per symbol, 90% of the time
    plain = synthetic_dataset(None, seq_len=512, num_samples=1, vocab_size=5000)[0]["tokens"]
    assert len(set(plain)) > 400  # without `learnable`, uniform random tokens as before
