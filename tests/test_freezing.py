import pytest

import lit_transfer
from lit_transfer.freezing import (
    POLICIES,
    FreezeUnfreeze,
    FullFineTune,
    GradualUnfreeze,
    LinearProbe,
    Milestones,
    UnfreezeAtEpochs,
    resolve_policy,
)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (FullFineTune(), [6, 6, 6, 6, 6]),
        (LinearProbe(), [1, 1, 1, 1, 1]),
        (FreezeUnfreeze(unfreeze_at_epoch=2), [1, 1, 6, 6, 6]),
        (GradualUnfreeze(every_n_epochs=1), [1, 2, 3, 4, 5]),
        (GradualUnfreeze(every_n_epochs=2, start_epoch=1, groups_per_step=2), [1, 3, 3, 5, 5]),
        (UnfreezeAtEpochs({1: 2, 3: -1}), [1, 2, 2, 6, 6]),
    ],
)
def test_trainable_groups_per_epoch(policy, expected):
    assert [policy.trainable_groups(epoch, num_groups=6) for epoch in range(5)] == expected


def test_gradual_unfreeze_saturates_at_all_groups():
    assert GradualUnfreeze(every_n_epochs=1).trainable_groups(100, num_groups=4) == 4


@pytest.mark.parametrize("name", list(POLICIES))
def test_config_round_trip(name):
    kwargs = {"schedule": {0: 1, 2: 3}} if name == "unfreeze_at_epochs" else {}
    policy = POLICIES[name](**kwargs, train_bn=True)
    again = resolve_policy(policy.to_config())
    assert again == policy
    assert type(again) is type(policy)
    assert again.train_bn is True


def test_names_resolve_and_train_bn_override():
    assert isinstance(resolve_policy("linear-probe"), LinearProbe)
    assert resolve_policy("freeze_unfreeze", train_bn=True).train_bn is True
    assert isinstance(resolve_policy(None), FullFineTune)


def test_unknown_policy_suggests_close_names():
    with pytest.raises(ValueError, match=r"Unknown freezing policy 'linear_prob'.*'linear_probe'"):
        resolve_policy("linear_prob")


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: FreezeUnfreeze(unfreeze_at_epoch=-1), "unfreeze_at_epoch"),
        (lambda: GradualUnfreeze(every_n_epochs=0), "every_n_epochs"),
        (lambda: GradualUnfreeze(groups_per_step=0), "groups_per_step"),
        (lambda: UnfreezeAtEpochs({}), "schedule"),
        (lambda: UnfreezeAtEpochs({1: 0}), r"schedule\[1\]"),
        (lambda: Milestones({1: 0}), r"milestones\[1\]"),
        (lambda: resolve_policy(3.5), "freeze"),
        (lambda: resolve_policy({"unfreeze_at_epoch": 2}), "policy"),
    ],
)
def test_bad_arguments_name_the_argument(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_monotonicity():
    assert UnfreezeAtEpochs({0: 1, 2: 3, 4: -1}).is_monotone()
    assert not UnfreezeAtEpochs({0: -1, 3: 1}).is_monotone()
    assert GradualUnfreeze().is_monotone()


def test_unfreeze_at_epochs_is_the_policy_name_and_milestones_is_deprecated():
    assert "unfreeze_at_epochs" in POLICIES and "milestones" not in POLICIES
    assert lit_transfer.UnfreezeAtEpochs is UnfreezeAtEpochs
    expected = UnfreezeAtEpochs({0: 1, 2: -1}, train_bn=True)
    with pytest.warns(DeprecationWarning, match=r"`Milestones`.*deprecated.*`UnfreezeAtEpochs`.*`schedule`"):
        old_object = Milestones({0: 1, 2: -1}, train_bn=True)
    assert old_object == expected and isinstance(old_object, UnfreezeAtEpochs)
    assert old_object.to_config() == {"policy": "unfreeze_at_epochs", "schedule": {0: 1, 2: -1}, "train_bn": True}
    # configs written before the rename (a checkpoint's hyper-parameters, a YAML recipe) still resolve
    with pytest.warns(DeprecationWarning, match="unfreeze_at_epochs"):
        old_config = resolve_policy({"policy": "milestones", "milestones": {0: 1, 2: -1}, "train_bn": True})
    assert old_config == expected and type(old_config) is UnfreezeAtEpochs
    with pytest.warns(DeprecationWarning, match="unfreeze_at_epochs"), pytest.raises(TypeError, match="schedule"):
        resolve_policy("milestones")  # the name alone, as before: the schedule is required


def test_unknown_policy_lists_the_new_name():
    with pytest.raises(ValueError, match=r"Known policies: .*unfreeze_at_epochs\b") as error:
        resolve_policy("milestone")
    assert "'milestones'" not in str(error.value)
