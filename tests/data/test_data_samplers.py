"""Training order as a function of (seed, epoch); rank-aware shuffled and balanced samplers."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from quiet import quiet_trainer

from lit_transfer import TransferClassifier
from lit_transfer.data import BalancedSampler, DigitsDataModule, EpochSampler


def _labels_in_order(dm: DigitsDataModule, epoch: int) -> list[int]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return torch.cat([labels for _, labels in loader]).tolist()


def test_two_fresh_loaders_same_epoch_same_order() -> None:
    orders = []
    for global_seed in (0, 1234):  # the global RNG must not matter
        torch.manual_seed(global_seed)
        dm = DigitsDataModule(shots_per_class=6, batch_size=16, seed=7)
        dm.setup("fit")
        orders.append((list(dm.train_dataloader().sampler), _labels_in_order(dm, 3)))
    assert orders[0] == orders[1]
    dm = DigitsDataModule(shots_per_class=6, batch_size=16, seed=7)
    dm.setup("fit")
    assert _labels_in_order(dm, 3) != _labels_in_order(dm, 4)  # epochs differ
    other_seed = DigitsDataModule(shots_per_class=6, batch_size=16, seed=8)
    other_seed.setup("fit")
    assert list(other_seed.train_dataloader().sampler) != orders[0][0]


def test_epoch_sampler_is_a_permutation_per_epoch() -> None:
    sampler = EpochSampler(list(range(50)), seed=3)
    seen = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(50))
        seen.append(order)
    assert seen[0] != seen[1] != seen[2]


@pytest.mark.parametrize("world", [2, 3])
def test_epoch_sampler_ranks_disjoint_and_complete(world: int) -> None:
    n = 31
    for epoch in (0, 1):
        shards = []
        for rank in range(world):
            sampler = EpochSampler(list(range(n)), seed=5, num_replicas=world, rank=rank)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
        assert len({len(s) for s in shards}) == 1  # equal length on every rank (no DDP hang)
        flat = [i for s in shards for i in s]
        assert set(flat) == set(range(n))  # complete
        assert len(flat) - n < world  # only padding repeats
        # disjoint apart from the padding
        assert sum(len(set(a) & set(b)) for i, a in enumerate(shards) for b in shards[i + 1 :]) < world


def test_balanced_sampler_partitions_draws_and_balances() -> None:
    labels = [0] * 90 + [1] * 10
    world = 2
    per_epoch = []
    for epoch in range(3):
        samplers = [BalancedSampler(labels, labels, seed=11, num_replicas=world, rank=r) for r in range(world)]
        for s in samplers:
            s.set_epoch(epoch)
        shards = [list(s) for s in samplers]
        assert len(shards[0]) == len(shards[1]) == 50
        # ranks take interleaved positions of one global draw: disjoint positions, nothing lost
        reference = BalancedSampler(labels, labels, seed=11, num_replicas=world, rank=0)
        reference.set_epoch(epoch)
        interleaved = [shards[p % world][p // world] for p in range(100)]
        assert interleaved == reference.epoch_draws()
        counts = Counter(labels[i] for shard in shards for i in shard)
        assert 35 <= counts[1] <= 65  # unweighted sampling would give ~10
        per_epoch.append(shards)
    assert per_epoch[0] != per_epoch[1] != per_epoch[2]  # reshuffled per epoch


def test_balanced_sampling_in_datamodule() -> None:
    dm = DigitsDataModule(classes=[0, 1], balanced_sampling=True, batch_size=8)
    dm.setup("fit")
    assert isinstance(dm.train_dataloader().sampler, BalancedSampler)


def test_rank_validation() -> None:
    with pytest.raises(ValueError, match=r"`rank` must be in \[0, num_replicas\)"):
        EpochSampler(list(range(4)), num_replicas=2, rank=2)


def test_batch_size_state_dict_round_trip() -> None:
    dm = DigitsDataModule(batch_size=4)
    dm.batch_size = 16  # a batch-size ramp changed it
    state = dm.state_dict()
    resumed = DigitsDataModule(batch_size=4)
    resumed.load_state_dict(state)
    resumed.setup("fit")
    assert resumed.batch_size == 16
    images, _ = next(iter(resumed.train_dataloader()))
    assert images.shape[0] == 16


def test_an_evaluation_from_a_checkpoint_keeps_its_own_batch_size(tmp_path) -> None:
    """A fit resumes with the checkpoint's batch size; validate/test/predict keep the one they were given."""
    model = TransferClassifier("test_resnet", num_classes=3, pretrained=False)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2)
    trainer.fit(model, DigitsDataModule(classes=[0, 1, 2], batch_size=8, image_size=16, num_workers=0))
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)

    evaluation = DigitsDataModule(classes=[0, 1, 2], batch_size=2, image_size=16, num_workers=0)
    evaluator = quiet_trainer(tmp_path, limit_val_batches=3)
    evaluator.validate(model, evaluation, ckpt_path=str(ckpt))
    assert evaluation.batch_size == 2
    assert evaluator.num_val_batches == [3]
    assert len(next(iter(evaluation.val_dataloader()))[0]) == 2

    resumed = DigitsDataModule(classes=[0, 1, 2], batch_size=2, image_size=16, num_workers=0)
    quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=1, limit_val_batches=1).fit(
        model, resumed, ckpt_path=str(ckpt)
    )
    assert resumed.batch_size == 8


@pytest.mark.parametrize("value", [0, -1, 2.5, "8"])
def test_bad_batch_size_rejected(value: object) -> None:
    with pytest.raises(ValueError, match=f"`batch_size` must be a positive int, got {value!r}"):
        DigitsDataModule(batch_size=value)  # type: ignore[arg-type]
