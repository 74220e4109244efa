from __future__ import annotations

import functools

import pytest
import torch
from callback_helpers import (
    FixedDataModule,
    RankDataModule,
    StopAfter,
    TinyRegressor,
    every_epoch_checkpoint,
    fit,
)
from lightning.pytorch import Callback

from lit_transfer.callbacks import OptimizerSwap

SGD_KWARGS = {"momentum": 0.9, "nesterov": True}


def make_sgd(params) -> torch.optim.SGD:
    """A plain function ``params -> Optimizer`` (picklable, opaque to OptimizerSwap)."""
    return torch.optim.SGD(params, **SGD_KWARGS)


def make_adam(params) -> torch.optim.Adam:
    return torch.optim.Adam(params)


def cli_sgd():
    """SGD as LightningCLI builds an ``OptimizerCallable`` from ``{class_path, init_args}`` in YAML."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch.cli import OptimizerCallable

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--optimizer", type=OptimizerCallable)
    config = parser.parse_object({"optimizer": {"class_path": "torch.optim.SGD", "init_args": SGD_KWARGS}})
    return parser.instantiate(config).optimizer


SGD_FORMS = {
    "class_path": lambda: {"optimizer": "torch.optim.SGD", "optimizer_kwargs": SGD_KWARGS},
    "partial": lambda: {"optimizer": functools.partial(torch.optim.SGD, **SGD_KWARGS)},
    "cli_callable": lambda: {"optimizer": cli_sgd()},
    "function": lambda: {"optimizer": make_sgd},
}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"optimizer": "torch.nn.Linear", "at_epoch": 1}, TypeError, "Optimizer subclass.*torch.nn.Linear"),
        ({"optimizer": int, "at_epoch": 1}, TypeError, "Optimizer subclass"),
        ({"optimizer": "torch.optim.Nope", "at_epoch": 1}, ValueError, "'torch.optim.Nope'"),
        ({}, ValueError, "exactly one trigger"),
        ({"at_epoch": 1, "at_step": 3}, ValueError, "exactly one trigger"),
        ({"at_epoch": -1}, ValueError, "`at_epoch`.*-1"),
        ({"at_step": -5}, ValueError, "`at_step`.*-5"),
        ({"criterion": "gradnorm"}, ValueError, "`criterion`.*'gradnorm'"),
        ({"at_epoch": 1, "lr": "swats"}, ValueError, "lr='swats'"),
        ({"at_epoch": 1, "lr": -0.1}, ValueError, "`lr`.*-0.1"),
        ({"optimizer": 3, "at_epoch": 1}, TypeError, "`optimizer` must be a class, class path or callable, got 3"),
        ({"optimizer": functools.partial(torch.nn.Linear), "at_epoch": 1}, TypeError, "Optimizer subclass.*Linear"),
        ({"optimizer": make_sgd, "optimizer_kwargs": {"lr": 1}, "at_epoch": 1}, ValueError, "`optimizer_kwargs`.*own"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        OptimizerSwap(**kwargs)


class OptimizerLog(Callback):
    """Per epoch start: optimizer class, group names and LRs, scheduler binding."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        opt = trainer.optimizers[0]
        bound = all(cfg.scheduler.optimizer is opt for cfg in trainer.lr_scheduler_configs)
        groups = tuple((g["name"], round(g["lr"], 12), g.get("momentum"), g.get("nesterov")) for g in opt.param_groups)
        self.rows.append((trainer.current_epoch, type(opt).__name__, groups, bound))


def test_swap_at_epoch(tmp_path) -> None:
    model, log = TinyRegressor(optimizer="adam", lr=0.01, scheduler="step"), OptimizerLog()
    cb = OptimizerSwap("torch.optim.SGD", SGD_KWARGS, at_epoch=1, lr=0.1)
    trainer = fit(tmp_path, model, FixedDataModule(4), [cb, log], max_epochs=2)
    opt = trainer.optimizers[0]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9 and opt.defaults["nesterov"]
    assert [g["name"] for g in opt.param_groups] == ["body", "head"]
    assert [g["lr_scale"] for g in opt.param_groups] == [1.0, 0.5]
    cfg = trainer.lr_scheduler_configs[0]
    assert cfg.scheduler.optimizer is trainer.optimizers[0]
    assert trainer.strategy._lightning_optimizers[0].optimizer is opt
    assert [row[1] for row in log.rows] == ["Adam", "SGD"]
    assert cb.swap_lrs == pytest.approx([0.1 * 0.5**2 / 0.5**2, 0.05])  # LR ratio of the groups kept
    used = torch.tensor(model.used_lrs)
    # StepLR(3, 0.5) keeps going on the new optimizer: step 8 is the first SGD step, 3 steps into a 2-halvings LR
    steps = torch.arange(8, 16)
    torch.testing.assert_close(used[8:, 0], 0.4 * 0.5 ** (steps // 3).double().float(), rtol=1e-6, atol=0)
    torch.testing.assert_close(used[:, 1] / used[:, 0], torch.full((16,), 0.5))


def test_swap_at_step(tmp_path) -> None:
    model = TinyRegressor(optimizer="adam", lr=0.01)
    cb = OptimizerSwap(torch.optim.SGD, at_step=5)
    trainer = fit(tmp_path, model, FixedDataModule(4), [cb], max_epochs=1)
    assert isinstance(trainer.optimizers[0], torch.optim.SGD) and cb.swap_step == 5
    assert model.used_lrs[5] == pytest.approx([0.01, 0.005])


def _state_summary(opt: torch.optim.Optimizer) -> list:
    return [sorted(opt.state[p].keys()) for g in opt.param_groups for p in g["params"]]


@pytest.mark.parametrize("form", sorted(SGD_FORMS))
@pytest.mark.parametrize("resume_after", [0, 1, 2])  # checkpoints at k-1, k, k+1 for a swap at epoch k = 1... 2
def test_resume_around_the_swap_is_exact(tmp_path, resume_after: int, form: str) -> None:
    """D4/D5: resume before, at and after the swap: class, hyper-parameters, state keys, LRs and weights equal.

    For every way of naming the new optimizer: class path + kwargs, ``functools.partial``, LightningCLI's
    ``OptimizerCallable``, a plain function.
    """

    def callbacks() -> list:
        return [OptimizerSwap(**SGD_FORMS[form](), at_epoch=2, lr=0.05), OptimizerLog()]

    full_cbs, full = callbacks(), TinyRegressor(optimizer="adam", lr=0.01, scheduler="lambda")
    full_trainer = fit(tmp_path / "a", full, FixedDataModule(4), full_cbs, max_epochs=4)
    first = TinyRegressor(optimizer="adam", lr=0.01, scheduler="lambda")
    fit(
        tmp_path / "b",
        first,
        FixedDataModule(4),
        [*callbacks(), StopAfter(resume_after + 1), every_epoch_checkpoint(tmp_path / "ckpt")],
        max_epochs=4,
    )
    cbs, resumed = callbacks(), TinyRegressor(optimizer="adam", lr=0.01, scheduler="lambda")
    trainer = fit(
        tmp_path / "b",
        resumed,
        FixedDataModule(4),
        cbs,
        max_epochs=4,
        ckpt_path=tmp_path / "ckpt" / f"epoch={resume_after}.ckpt",
    )
    assert trainer.global_step == 32 and cbs[1].rows[0][0] == resume_after + 1
    assert cbs[1].rows == full_cbs[1].rows[resume_after + 1 :]
    opt, ref = trainer.optimizers[0], full_trainer.optimizers[0]
    assert type(opt) is type(ref) is torch.optim.SGD and opt.defaults == ref.defaults
    assert _state_summary(opt) == _state_summary(ref) == [["momentum_buffer"]] * 4
    assert trainer.lr_scheduler_configs[0].scheduler.optimizer is opt
    torch.testing.assert_close(torch.tensor(first.used_lrs + resumed.used_lrs), torch.tensor(full.used_lrs))
    for (name, a), (_, b) in zip(full.named_parameters(), resumed.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


class SwatsRecorder(Callback):
    """Recomputes gamma and the lambda recursion by hand from params/grads around each optimizer step."""

    def __init__(self, swap: OptimizerSwap) -> None:
        self.swap = swap
        self.checked = 0
        self._before = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self.swap.swapped:
            group = optimizer.param_groups[0]
            self._before = [(p, p.detach().clone(), p.grad.clone()) for p in group["params"]]
            self._lambda = self.swap.swats.lambdas[0] if self.swap.swats.lambdas else 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._before is None:
            return
        step = torch.cat([(p.detach() - old).flatten() for p, old, _ in self._before]).double()
        grad = torch.cat([g.flatten() for *_, g in self._before]).double()
        gamma = float(step @ step) / -float(step @ grad)
        assert self.swap.swats.gammas[0] == pytest.approx(gamma, rel=1e-9)
        beta2 = trainer.optimizers[0].param_groups[0]["betas"][1]
        expected = beta2 * self._lambda + (1 - beta2) * gamma
        assert self.swap.swats.lambdas[0] == pytest.approx(expected, rel=1e-9)
        self._before = None
        self.checked += 1


def test_swats_switches_with_a_finite_positive_lr(tmp_path) -> None:
    swap = OptimizerSwap(criterion="swats", swats_eps=1e-3)
    recorder = SwatsRecorder(swap)
    model = TinyRegressor(optimizer="adam", lr=0.01, betas=(0.9, 0.99))
    trainer = fit(tmp_path, model, FixedDataModule(32), [swap, recorder], max_epochs=300)  # full batch
    assert swap.swapped and isinstance(trainer.optimizers[0], torch.optim.SGD)
    assert 1 < swap.swap_step < 300 and recorder.checked == swap.swap_step
    assert all(0 < lr < float("inf") for lr in swap.swap_lrs)
    # the SGD LR of each group is its bias-corrected estimate at the switch
    steps = swap.swats.steps
    assert swap.swap_lrs == pytest.approx([lam / (1 - 0.99**k) for lam, k in zip(swap.swats.lambdas, steps)])
    assert model.used_lrs[swap.swap_step] == pytest.approx(swap.swap_lrs)  # SGD runs at those LRs


def test_swats_needs_adam(tmp_path) -> None:
    with pytest.raises(ValueError, match="Adam-family"):
        fit(
            tmp_path,
            TinyRegressor(optimizer="sgd"),
            FixedDataModule(4),
            [OptimizerSwap(criterion="swats")],
            max_steps=1,
        )


class _SwapStepOnRanks(Callback):
    def __init__(self, swap: OptimizerSwap) -> None:
        self.swap = swap

    def on_train_end(self, trainer, pl_module) -> None:
        info = torch.tensor([float(self.swap.swap_step or -1), float(self.swap.swapped)])
        gathered = trainer.strategy.all_gather(info)
        params = trainer.strategy.all_gather(torch.cat([p.detach().flatten() for p in pl_module.parameters()]))
        if trainer.global_rank == 0:
            torch.save({"info": gathered, "params": params}, f"{trainer.default_root_dir}/swap.pt")


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_swats_swaps_on_both_ranks(tmp_path) -> None:
    swap = OptimizerSwap(criterion="swats", swats_eps=1e-3)
    model = TinyRegressor(optimizer="adam", lr=0.01, betas=(0.9, 0.99))
    fit(
        tmp_path,
        model,
        RankDataModule(16),
        [swap, _SwapStepOnRanks(swap)],
        max_epochs=300,
        devices=2,
        strategy="ddp_spawn",
        default_root_dir=str(tmp_path),
    )
    out = torch.load(tmp_path / "swap.pt")
    (step0, swapped0), (step1, swapped1) = out["info"].tolist()
    assert swapped0 == swapped1 == 1.0 and step0 == step1 > 1
    torch.testing.assert_close(out["params"][0], out["params"][1])


def _swap_and_checkpoint(tmp_path, optimizer) -> tuple[TinyRegressor, dict]:
    model = TinyRegressor(optimizer="adam", lr=0.01)
    swap = OptimizerSwap(optimizer, at_epoch=1)
    fit(tmp_path, model, FixedDataModule(4), [swap, every_epoch_checkpoint(tmp_path / "ckpt")], max_epochs=2)
    return model, torch.load(tmp_path / "ckpt" / "epoch=1.ckpt", weights_only=True)  # plain values only


def test_every_form_swaps_to_the_same_optimizer(tmp_path) -> None:
    reference = None
    for form, kwargs in sorted(SGD_FORMS.items()):
        model = TinyRegressor(optimizer="adam", lr=0.01)
        trainer = fit(tmp_path / form, model, FixedDataModule(4), [OptimizerSwap(**kwargs(), at_epoch=1)], max_epochs=2)
        opt = trainer.optimizers[0]
        assert type(opt) is torch.optim.SGD and opt.defaults["momentum"] == 0.9 and opt.defaults["nesterov"], form
        assert [g["name"] for g in opt.param_groups] == ["body", "head"], form
        weights = torch.cat([p.detach().flatten() for p in model.parameters()])
        if reference is None:
            reference = weights
        torch.testing.assert_close(weights, reference, rtol=0, atol=0, msg=form)


def test_checkpoint_records_a_partial_as_class_and_arguments(tmp_path) -> None:
    _, ckpt = _swap_and_checkpoint(tmp_path, functools.partial(torch.optim.SGD, momentum=0.5))
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("OptimizerSwap")]
    assert state["swapped"] and state["optimizer"] == "torch.optim.sgd.SGD"
    assert state["optimizer_kwargs"] == {"momentum": 0.5}


def test_a_callable_checkpoint_resumes_only_with_a_callable_of_its_class(tmp_path) -> None:
    _, ckpt = _swap_and_checkpoint(tmp_path, make_sgd)
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("OptimizerSwap")]
    assert state["optimizer"] == "torch.optim.sgd.SGD" and state["optimizer_kwargs"] is None
    path = tmp_path / "ckpt" / "epoch=1.ckpt"
    with pytest.raises(ValueError, match=r"swapped to torch.optim.sgd.SGD, but `optimizer` .*make_adam.* builds"):
        fit(
            tmp_path,
            TinyRegressor("adam"),
            FixedDataModule(4),
            [OptimizerSwap(make_adam, at_epoch=1)],
            max_epochs=3,
            ckpt_path=path,
        )
    with pytest.raises(
        ValueError, match=r"swapped to torch.optim.sgd.SGD by a callable `optimizer`, but this OptimizerSwap builds SGD"
    ):
        fit(
            tmp_path,
            TinyRegressor("adam"),
            FixedDataModule(4),
            [OptimizerSwap("torch.optim.SGD", at_epoch=1)],
            max_epochs=3,
            ckpt_path=path,
        )


def test_a_callable_that_builds_no_optimizer_is_named(tmp_path) -> None:
    swap = OptimizerSwap(lambda params: list(params), at_step=1)
    with pytest.raises(TypeError, match=r"`optimizer` <function .*> returned list, not a torch.optim.Optimizer"):
        fit(tmp_path, TinyRegressor("adam"), FixedDataModule(4), [swap], max_steps=3)
