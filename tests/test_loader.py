import numpy as np
import pytest

from alexnet import AlexNetError
from alexnet.data import StoreLoader
from alexnet.data.store import Split


def labelled_split(n=103):
    # Image i is filled with i % 256 and labelled i: batches can be checked against their labels.
    images = np.broadcast_to((np.arange(n) % 256).astype(np.uint8)[:, None, None, None], (n, 4, 4, 3)).copy()
    return Split("train", images, np.arange(n, dtype=np.int64))


def seen(loader):
    out = []
    for images, labels in loader:
        assert (images[:, 0, 0, 0].numpy() == labels.numpy() % 256).all()  # rows travel with their labels
        out += labels.tolist()
    return out


def test_every_sample_once_per_epoch_across_ranks():
    split = labelled_split(103)
    per_rank = [seen(StoreLoader(split, 8, seed=5, rank=r, world_size=3)) for r in range(3)]
    everything = sorted(i for rank in per_rank for i in rank)
    assert everything == list(range(103))
    assert [len(p) for p in per_rank] == [35, 34, 34]


def test_drop_last_gives_equal_full_batches_per_rank():
    split = labelled_split(103)
    loaders = [StoreLoader(split, 8, seed=5, rank=r, world_size=3, drop_last=True) for r in range(3)]
    assert [len(ld) for ld in loaders] == [4, 4, 4]
    batches = [[len(lab) for _, lab in ld] for ld in loaders]
    assert batches == [[8] * 4] * 3
    ids = [
        i for r in range(3) for i in seen(StoreLoader(split, 8, seed=5, rank=r, world_size=3, drop_last=True))
    ]
    assert len(ids) == len(set(ids)) == 96


def test_shuffle_is_seeded_per_epoch():
    split = labelled_split(50)
    a, b = StoreLoader(split, 10, seed=1), StoreLoader(split, 10, seed=1)
    first = seen(a)
    assert first == seen(b) and sorted(first) == list(range(50)) and first != list(range(50))
    assert seen(a) != first  # epoch 1 after epoch 0 ended
    assert seen(StoreLoader(split, 10, seed=2)) != first
    assert seen(StoreLoader(split, 10, shuffle=False)) == list(range(50))


def test_resume_mid_epoch_sees_exactly_the_rest():
    split = labelled_split(64)
    full = StoreLoader(split, 8, seed=9)
    full.set_epoch(2)
    whole = [lab.tolist() for _, lab in full]
    interrupted = StoreLoader(split, 8, seed=9)
    interrupted.set_epoch(2)
    it = iter(interrupted)
    first = [next(it)[1].tolist() for _ in range(3)]
    state = interrupted.state_dict()
    assert state == {"seed": 9, "epoch": 2, "position": 3}
    resumed = StoreLoader(split, 8, seed=9)
    resumed.load_state_dict(state)
    rest = [lab.tolist() for _, lab in resumed]
    assert first + rest == whole
    assert resumed.state_dict() == {"seed": 9, "epoch": 3, "position": 0}
    with pytest.raises(AlexNetError, match="saved loader used seed 9"):
        StoreLoader(split, 8, seed=1).load_state_dict(state)


def test_too_few_samples_for_a_batch():
    with pytest.raises(AlexNetError, match="fewer than one batch"):
        StoreLoader(labelled_split(10), 8, drop_last=True, rank=0, world_size=2)


def test_reused_buffers_give_the_same_batches():
    split = labelled_split(70)
    fresh = seen(StoreLoader(split, 8, seed=3))
    assert seen(StoreLoader(split, 8, seed=3, reuse_buffers=True, prefetch=1)) == fresh
