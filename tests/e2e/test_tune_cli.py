"""``lit-transfer tune`` through the real command: a study on the digits, its files, resuming, k-fold, refitting the
best trial with ``fit``, a user's mistake, and several workers on one database, one of them killed mid-trial.

The database is real: an SQLite file by default; the many-machines path runs the same workers against PostgreSQL
when ``LIT_TRANSFER_TEST_POSTGRES_URL`` names one (``.ci/run`` starts a local cluster for it).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from photo_fixture import make_photo_folder

REPO = Path(__file__).resolve().parents[2]
LIT_TRANSFER = Path(sys.executable).parent / "lit-transfer"
SPACE = REPO / "recipes" / "tune_space.yaml"
POSTGRES_ENV = "LIT_TRANSFER_TEST_POSTGRES_URL"
TINY = [
    "--config",
    str(REPO / "recipes" / "defaults.yaml"),
    "--model.backbone=test_resnet",
    "--data.image_size=16",
    "--data.classes=[0,1,2]",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.default_root_dir=runs/digits",
]
STUDY = Path("runs/digits/tune/tune_space")


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _tune(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    command = [str(LIT_TRANSFER), "tune", *TINY, *args]
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _study(cwd: Path, storage: str | None = None, name: str = "tune_space") -> optuna.Study:
    url = storage or f"sqlite:///{(cwd / STUDY / 'study.db').resolve()}"
    return optuna.load_study(study_name=name, storage=url)


def _states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def test_tune_runs_the_recipe_space_on_the_digits(tmp_path: Path) -> None:
    result = _tune(tmp_path, "--space", str(SPACE), "--n_trials", "2", "--trainer.max_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("study.db", "trials.csv", "best.yaml", "history.png"):
        assert (tmp_path / STUDY / name).is_file(), name
    study = _study(tmp_path)
    assert _states(study) == ["COMPLETE", "COMPLETE"]
    assert [t.user_attrs["seed"] for t in study.trials] == [42, 43]  # defaults.yaml's seed_everything + number
    assert f"Best: trial {study.best_trial.number}, val_acc = " in result.stdout


@pytest.mark.slow  # over ~15 s on 2 cores
def test_tune_searches_probe_views_and_each_trial_fits_as_drawn(tmp_path: Path) -> None:
    """`model.probe_views` is a setting like any other: the trials that drew 4 fit their head first, the others not."""
    space = tmp_path / "space.yaml"
    space.write_text("model.probe_views: {choices: [0, 4]}\n")
    args = ["--space", str(space), "--n_trials", "4", "--trainer.max_epochs=1", "--model.pretrained=false"]
    result = _tune(tmp_path, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    study = _study(tmp_path, f"sqlite:///{tmp_path / 'runs/digits/tune/space/study.db'}", name="space")
    drawn = [t.params["model.probe_views"] for t in study.trials]
    assert _states(study) == ["COMPLETE"] * 4 and len(drawn) == 4
    probed = (result.stdout + result.stderr).count("HeadProbe: classifier fitted")
    assert probed == drawn.count(4), (drawn, probed)


@pytest.mark.slow
def test_tune_writes_the_study_files_resumes_and_the_best_refits(tmp_path: Path) -> None:
    first = _tune(tmp_path, "--space", str(SPACE), "--n_trials", "2", "--trainer.max_epochs=2")
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp_path / STUDY
    for name in ("study.db", "trials.csv", "best.yaml", "history.png", "slice.png", "contour.png"):
        assert (out / name).is_file(), name
    assert "Best: trial" in first.stdout and "lit-transfer fit --config" in first.stdout

    study = _study(tmp_path)
    assert _states(study) == ["COMPLETE", "COMPLETE"]
    assert study.user_attrs["metric"] == "val_acc" and study.direction.name == "MAXIMIZE"
    for trial in study.trials:  # seeded and recorded: overrides, seed, its own run folder
        assert trial.user_attrs["seed"] == 42 + trial.number  # defaults.yaml's seed_everything + the number
        assert f"--model.freeze={trial.params['model.freeze']}" in trial.user_attrs["overrides"]
        run = tmp_path / trial.user_attrs["run_dir"] / "lightning_logs" / "version_0"
        assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "config.yaml").is_file()
        recorded = yaml.safe_load((run / "config.yaml").read_text())
        lr = recorded["model"]["init_args"]["optimizer"]["init_args"]["lr"]
        assert lr == pytest.approx(trial.params["model.optimizer.init_args.lr"])
        assert len(trial.intermediate_values) == 2  # one report per epoch
    with open(out / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["number"]) for r in rows] == [0, 1] and all(r["state"] == "COMPLETE" for r in rows)
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["seed_everything"] == study.best_trial.user_attrs["seed"]
    assert best["model"]["init_args"]["layer_decay"] == pytest.approx(study.best_params["model.layer_decay"])
    assert best["trainer"]["default_root_dir"] == "runs/digits"  # the refit is an ordinary run of the user's

    again = _tune(tmp_path, "--space", str(SPACE), "--n_trials", "1", "--trainer.max_epochs=2")  # the same command
    assert again.returncode == 0, again.stderr[-3000:]
    assert _states(_study(tmp_path)) == ["COMPLETE"] * 3  # continued, not restarted
    (out / "trials.csv").unlink()
    report = _tune(tmp_path, "--space", str(SPACE), "--n_trials", "0")  # the files again, from the database alone
    assert report.returncode == 0 and "3 trials (3 complete" in report.stdout
    assert len((out / "trials.csv").read_text().splitlines()) == 4 and len(_states(_study(tmp_path))) == 3

    refit = subprocess.run(
        [str(LIT_TRANSFER), "fit", "--config", str(out / "best.yaml")],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refit.returncode == 0, refit.stderr[-3000:]
    assert list((tmp_path / "runs/digits/lightning_logs").glob("version_*/checkpoints/best.ckpt"))


@pytest.mark.slow
def test_folds_score_each_trial_by_the_mean_over_folds(tmp_path: Path) -> None:
    result = _tune(tmp_path, "--space", str(SPACE), "--n_trials", "1", "--folds", "2", "--trainer.max_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    study = _study(tmp_path)
    trial = study.trials[0]
    scores = trial.user_attrs["fold_scores"]
    assert len(scores) == 2 and trial.value == pytest.approx(sum(scores) / 2)
    assert study.user_attrs["folds"] == 2 and study.user_attrs["fold_seed"] == 42
    assert sorted(trial.intermediate_values) == [0, 1]  # fold 1 continues the steps of fold 0
    assert "Fold 1 of 2: train" in result.stderr and "Fold 2 of 2: train" in result.stderr
    for fold in (0, 1):
        assert (tmp_path / trial.user_attrs["run_dir"] / f"fold_{fold}" / "lightning_logs" / "version_0").is_dir()

    other = _tune(tmp_path, "--space", str(SPACE), "--n_trials", "1", "--trainer.max_epochs=1")  # no folds now
    assert other.returncode == 2
    assert "folds 2 (this command: 0)" in other.stderr.strip().splitlines()[-1]


def test_a_mistake_in_the_space_exits_2_before_any_trial(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("model.backbon: {choices: [test_resnet]}\n")
    result = _tune(tmp_path, "--space", str(space), "--n_trials", "1")
    assert result.returncode == 2
    assert "model.backbon` is not an argument" in result.stderr.strip().splitlines()[-1]
    assert not list(tmp_path.rglob("trial_*"))


def test_a_timeout_that_is_not_positive_exits_2_before_any_trial(tmp_path: Path) -> None:
    result = _tune(tmp_path, "--space", str(SPACE), "--timeout", "-5")
    assert result.returncode == 2
    assert "`--timeout` must be a positive number of seconds" in result.stderr.strip().splitlines()[-1]
    assert not list(tmp_path.rglob("trial_*")) and not list(tmp_path.rglob("study.db"))


def test_a_base_config_no_trial_can_fit_exits_2_before_the_study_opens(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"  # the learning rate alone: no trial's values can change what the data check finds
    space.write_text("model.optimizer.init_args.lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n")
    cached = ("--model.freeze=linear_probe", "--model.cache_features=true", "--data.train_transform=light")
    result = _tune(tmp_path, *cached, "--space", str(space), "--n_trials", "2")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "set `cache_features: false`" in result.stderr.strip().splitlines()[-1]
    assert "Trial 0 failed" not in result.stderr and "Traceback" not in result.stderr  # not a failed Optuna trial
    assert not list(tmp_path.rglob("study.db")) and not list(tmp_path.rglob("trial_*"))


def test_a_trial_whose_values_do_not_fit_the_photos_fails_and_the_search_goes_on(tmp_path: Path) -> None:
    make_photo_folder(tmp_path / "photos", per_class=4, val_per_class=2, test_per_class=1, bad_files=False)
    space = tmp_path / "space.yaml"  # a ViT built for 32 px takes only 32 px: the 24 px trials are refused
    space.write_text("data.image_size: {choices: [24, 32]}\n")
    command = [str(LIT_TRANSFER), "tune", "--config", str(REPO / "recipes" / "defaults.yaml")]
    command += ["--data", "ImageFolderDataModule", "--data.root", "photos", "--data.batch_size", "4"]
    command += ["--model.backbone=test_vit", "--model.img_size=32", *TINY[5:], "--trainer.max_epochs=1"]
    command += ["--space", str(space), "--n_trials", "3", "--sampler_seed", "0"]
    result = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{tmp_path / 'runs/digits/tune/space/study.db'}")
    sizes = [t.params["data.image_size"] for t in study.trials]
    assert sorted(set(sizes)) == [24, 32], sizes  # the seed draws both (else the test shows nothing)
    assert _states(study) == ["COMPLETE" if size == 32 else "FAIL" for size in sizes]
    for trial in study.trials:
        refused = trial.user_attrs.get("refused")
        assert (refused is not None) == (trial.params["data.image_size"] == 24)
        if refused is not None:
            assert "is built for 32x32 px images" in refused and "--data.image_size 32" in refused
    assert "Traceback" not in result.stderr  # Optuna's warning names the refusal; no traceback
    assert "Refused by the data checks (failed): #" in result.stdout
    refused_trial = next(t for t in study.trials if t.params["data.image_size"] == 24)
    assert not (tmp_path / f"runs/digits/tune/space/trial_{refused_trial.number}").exists()  # refused before its run
    with open(tmp_path / "runs/digits/tune/space/trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [bool(row["refused"]) for row in rows] == [size == 24 for size in sizes]


def _worker(cwd: Path, storage: str, n_trials: int, name: str, log: str) -> subprocess.Popen[str]:
    command = [
        str(LIT_TRANSFER),
        "tune",
        *TINY,
        "--space",
        str(SPACE),
        "--trainer.max_epochs=10",
        "--n_trials",
        str(n_trials),
        "--storage",
        storage,
        "--study_name",
        name,
        "--heartbeat_interval",
        "1",
        "--grace_period",
        "3",
    ]
    with open(cwd / log, "w") as handle:  # the child keeps its own copy of the file descriptor
        return subprocess.Popen(command, cwd=cwd, env=_env(), stdout=handle, stderr=subprocess.STDOUT, text=True)


def _wait_running_trial(study_of: object, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            study = study_of()  # type: ignore[operator]
            if any(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False)):
                return
        except KeyError:  # the study is not created yet
            pass
        time.sleep(0.3)
    raise AssertionError("the first worker never started a trial")


def _wait_mid_trial(study_of: object, worker_dir: Path, deadline: float) -> int:
    """The number of a trial the worker in ``worker_dir`` is in the middle of: running, with a first validation.

    Its first reported validation proves the fit (and Optuna's heartbeat thread) is under way and most of its
    epochs are still ahead, so a kill right after lands inside the trial, however fast the machine.
    """
    while time.monotonic() < deadline:
        for trial in study_of().get_trials(deepcopy=False):  # type: ignore[operator]
            mine = (worker_dir / str(trial.user_attrs.get("run_dir", "\0"))).is_dir()
            if trial.state.name == "RUNNING" and mine and 1 <= len(trial.intermediate_values) <= 3:
                return trial.number
        time.sleep(0.05)
    raise AssertionError(f"the worker in {worker_dir} was never seen early in a trial")


def _storages() -> list[object]:
    url = os.environ.get(POSTGRES_ENV)
    postgres = pytest.param(
        url,
        id="postgresql",
        marks=pytest.mark.skipif(
            not url, reason=f"{POSTGRES_ENV} is not set: .ci/run starts a PostgreSQL cluster and sets it"
        ),
    )
    return [pytest.param(None, id="sqlite"), postgres]


@pytest.mark.slow
@pytest.mark.parametrize("url", _storages())
def test_workers_share_one_study_and_a_killed_workers_trial_is_retried(tmp_path: Path, url: str | None) -> None:
    storage = url or f"sqlite:///{(tmp_path / 'shared' / 'study.db').resolve()}"
    (tmp_path / "shared").mkdir()
    name = f"shared-{uuid.uuid4().hex[:8]}"
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"  # as on two machines: nothing shared but the database
    a_dir.mkdir(), b_dir.mkdir()

    victim = _worker(a_dir, storage, n_trials=3, name=name, log="victim.log")
    _wait_running_trial(lambda: optuna.load_study(study_name=name, storage=storage), time.monotonic() + 120)
    other = _worker(b_dir, storage, n_trials=2, name=name, log="other.log")
    # Optuna recognises a dead worker by its stale heartbeat: a worker killed between creating its trial and the first
    # heartbeat leaves a trial nothing can tell from a live one, and one killed between trials leaves none to retry;
    # so kill the victim once its trial has reported a validation (a fast machine finishes a trial in ~1 s)
    study_of = lambda: optuna.load_study(study_name=name, storage=storage)  # noqa: E731
    killed = _wait_mid_trial(study_of, a_dir, time.monotonic() + 120)
    victim.send_signal(signal.SIGKILL)  # mid-trial: no chance to tell the database
    victim.wait(timeout=30)
    assert other.wait(timeout=300) == 0, (b_dir / "other.log").read_text()[-3000:]

    late = _worker(b_dir, storage, n_trials=1, name=name, log="late.log")  # after the grace period: fails the trial
    assert late.wait(timeout=300) == 0, (b_dir / "late.log").read_text()[-3000:]

    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert [t.number for t in failed] == [killed], [t.state.name for t in trials]
    retried = [t for t in trials if (t.system_attrs.get("retry_history") or [None])[0] == failed[0].number]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert retried[0].params == failed[0].params and retried[0].user_attrs["seed"] == failed[0].user_attrs["seed"]
    assert sum(t.state.name == "COMPLETE" for t in trials) >= 3  # the other workers' 3, and any the victim ended
    assert not [t for t in trials if t.state.name == "RUNNING"]
    runs = {t.user_attrs["run_dir"] for t in trials}
    assert len(runs) == len(trials)  # each trial its own run folder


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_inside_a_trial_follows_rank_zero(tmp_path: Path) -> None:
    ddp = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.max_epochs=2"]
    result = _tune(tmp_path, "--space", str(SPACE), "--n_trials", "2", *ddp, timeout=240)  # ~25 s when it works
    assert result.returncode == 0, result.stderr[-3000:]
    study = _study(tmp_path)
    assert _states(study) == ["COMPLETE", "COMPLETE"]  # rank 1 ran each trial's fit, not trials of its own
    for trial in study.trials:
        assert len(trial.intermediate_values) == 2
        assert (tmp_path / trial.user_attrs["run_dir"] / "lightning_logs" / "version_0" / "checkpoints").is_dir()
    assert result.stderr.count("All distributed processes registered. Starting with 2 processes") == 2
    assert not (tmp_path / "runs/digits/lightning_logs").exists()  # the tune command itself writes no run
