import pytest

import lit_transfer
from lit_transfer.freezing import (
    POLICIES,
    FreezeUnfreeze,
    FullFineTune,
    GradualUnfreeze,
    LinearProbe,
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
    assert [policy.trainable_depth(epoch, num_groups=6) for epoch in range(5)] == expected


def test_gradual_unfreeze_saturates_at_all_groups():
    assert GradualUnfreeze(every_n_epochs=1).trainable_depth(100, num_groups=4) == 4


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


def test_class_path_configs_resolve():
    """The form a config file gives (the CLI hands it over as the model's hyper-parameter), built-in or user-defined."""
    policy = resolve_policy({"class_path": "lit_transfer.FreezeUnfreeze", "init_args": {"unfreeze_at_epoch": 2}})
    assert isinstance(policy, FreezeUnfreeze) and policy.unfreeze_at_epoch == 2
    assert isinstance(resolve_policy({"class_path": "LinearProbe"}), LinearProbe)
    assert type(resolve_policy({"class_path": f"{__name__}.MyPolicy"})) is MyPolicy
    with pytest.raises(ValueError, match=r"'torch.nn.Linear' names no freezing policy class"):
        resolve_policy({"class_path": "torch.nn.Linear"})


class MyPolicy(LinearProbe):
    """A policy of a user's own."""


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


def test_a_milestones_policy_is_unknown():
    assert "unfreeze_at_epochs" in POLICIES and "milestones" not in POLICIES
    assert lit_transfer.UnfreezeAtEpochs is UnfreezeAtEpochs and not hasattr(lit_transfer, "Milestones")
    with pytest.raises(ValueError, match=r"Unknown freezing policy 'milestones'.*unfreeze_at_epochs"):
        resolve_policy({"policy": "milestones", "milestones": {0: 1, 2: -1}})


def test_a_policy_object_is_returned_as_given_with_train_bn_applied():
    """The caller's object is the one the run uses (an AutoFreeze plan must reach the user's instance)."""
    policy = FreezeUnfreeze(unfreeze_at_epoch=2)
    assert resolve_policy(policy, train_bn=True) is policy and policy.train_bn is True
    assert resolve_policy(policy) is policy and policy.train_bn is True


def test_unknown_policy_lists_the_new_name():
    with pytest.raises(ValueError, match=r"Known policies: .*unfreeze_at_epochs\b") as error:
        resolve_policy("milestone")
    assert "'milestones'" not in str(error.value)
