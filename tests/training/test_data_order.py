"""ResumableSampler: a resumed epoch sees exactly the batches not yet seen; ranks split each step."""

from tuner.training.data_order import ResumableSampler


def test_resume_continues_the_same_order() -> None:
    full = ResumableSampler(23, 3, seed=7)
    full.set_epoch(2)
    resumed = ResumableSampler(23, 3, seed=7)
    resumed.set_epoch(2, skip_batches=3)
    assert list(resumed) == list(full)[3:]
    assert len(resumed) == len(full) - 3 == 4
    other_epoch = ResumableSampler(23, 3, seed=7)
    other_epoch.set_epoch(3)
    assert list(other_epoch) != list(full)


def test_ranks_split_each_step_without_overlap() -> None:
    ranks = [ResumableSampler(20, 2, shuffle=False, rank=r, world_size=2) for r in range(2)]
    assert [list(s) for s in ranks] == [
        [[0, 1], [4, 5], [8, 9], [12, 13], [16, 17]],
        [[2, 3], [6, 7], [10, 11], [14, 15], [18, 19]],
    ]
