"""Sweeps: multirun, launchers, failure isolation, Optuna, and the report over the results."""

import os
from pathlib import Path

import pytest
import torch
import yaml

from lab.report import report
from tests.conftest import TINY_DQN, compose_config, lab_sweep, read_summary


def _job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def test_a_2x2_multirun_writes_four_summaries(tmp_path):
    result = lab_sweep(tmp_path, "agent.gamma=0.98,0.99", "seed=0,1", *TINY_DQN)
    assert result.returncode == 0, result.stderr
    jobs = _job_dirs(tmp_path)
    assert len(jobs) == 4
    seen = {
        (read_summary(j)["seed"], yaml.safe_load((j / ".hydra/overrides.yaml").read_text())[0])
        for j in jobs
    }
    assert seen == {(s, f"agent.gamma={g}") for s in (0, 1) for g in (0.98, 0.99)}
    assert all(read_summary(j)["status"] == "completed" for j in jobs)


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    # Each job's lab.log records its process id and the time of every line.
    log_format = "hydra.job_logging.formatters.simple.format='%(process)d %(created)f %(message)s'"
    result = lab_sweep(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "seed=0,1",
        log_format,
        *TINY_DQN,
        "threads=null",  # as generative runs default to: each job gets its share of the cores
    )
    assert result.returncode == 0, result.stderr
    jobs = _job_dirs(tmp_path)
    assert [read_summary(j)["seed"] for j in jobs] == [0, 1]
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    for job in jobs:
        saved = torch.load(job / "checkpoints" / "last.pt", weights_only=True)
        assert saved["config"]["threads"] == share
    spans = {}
    for job in jobs:
        lines = [line.split(" ", 2) for line in (job / "lab.log").read_text().splitlines()]
        pids = {int(pid) for pid, _, _ in lines}
        assert len(pids) == 1, pids
        times = [float(created) for _, created, _ in lines]
        spans[pids.pop()] = (min(times), max(times))
    assert len(spans) == 2 and os.getpid() not in spans  # two worker processes, not the sweep's
    (start_a, end_a), (start_b, end_b) = spans.values()
    assert start_a < end_b and start_b < end_a, spans  # the two runs overlapped in time


def test_a_failing_job_does_not_stop_the_others(tmp_path):
    result = lab_sweep(tmp_path, "agent.lr=-1,0.001", "seed=0,1", *TINY_DQN)
    assert result.returncode == 1, "a sweep with failures ends non-zero, after every job"
    summaries = [read_summary(j) for j in _job_dirs(tmp_path)]
    assert len(summaries) == 4
    failed = [s for s in summaries if s["status"] == "failed"]
    assert len(failed) == 2 and all("agent.lr=-1" in s["error"] for s in failed)
    assert sum(s["status"] == "completed" for s in summaries) == 2
    assert "2 failed" in result.stderr + result.stdout
    table = report(tmp_path)
    assert "Failed runs (2):" in table and "agent.lr=-1: a learning rate must be > 0" in table


def test_wandb_runs_of_a_sweep_share_a_group(tmp_path):
    from tests.test_wandb import read_records

    result = lab_sweep(tmp_path, "logger.wandb.mode=offline", "seed=0,1", *TINY_DQN)
    assert result.returncode == 0, result.stderr
    groups = set()
    for job in _job_dirs(tmp_path):
        (file,) = (job / "wandb").glob("offline-run-*/run-*.wandb")
        records = read_records(file)
        groups.add(next(r.run for r in records if r.WhichOneof("record_type") == "run").run_group)
    assert len(groups) == 1
    assert groups.pop().endswith(tmp_path.name)  # named after the sweep directory


def test_optuna_preset_runs_three_trials_and_records_the_best(tmp_path):
    result = lab_sweep(
        tmp_path,
        "hparams_search=dqn_cartpole",
        "hydra.sweeper.n_trials=3",
        *TINY_DQN,
    )
    assert result.returncode == 0, result.stderr
    jobs = _job_dirs(tmp_path)
    assert len(jobs) == 3
    returns = [read_summary(j)["metrics"]["eval/return_mean"] for j in jobs]
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(returns)
    assert set(best["best_params"]) == {
        "agent.lr",
        "agent.gamma",
        "agent.n_step",
        "agent.target_interval",
        "agent.batch_size",
    }
    assert 1e-4 <= best["best_params"]["agent.lr"] <= 3e-3


def test_optuna_marks_failed_trials_failed_and_goes_on(tmp_path):
    # n_step=0 is refused by DQN: about half the trials fail, the search must not.
    result = lab_sweep(
        tmp_path,
        "hparams_search=dqn_cartpole",
        "hydra.sweeper.n_trials=6",
        'hydra.sweeper.params={agent.n_step:"choice(0, 3)"}',
        *TINY_DQN,
    )
    assert result.returncode == 1, result.stderr  # a sweep with failed jobs ends non-zero
    summaries = [read_summary(j) for j in _job_dirs(tmp_path)]
    assert len(summaries) == 6  # every trial ran: a failure did not stop the search
    failed = [s for s in summaries if s["status"] == "failed"]
    completed = [s for s in summaries if s["status"] == "completed"]
    assert failed and completed and len(failed) + len(completed) == 6
    assert all("agent.n_step=0" in s["error"] for s in failed)
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert best["best_params"]["agent.n_step"] == 3
    assert best["best_value"] == max(s["metrics"]["eval/return_mean"] for s in completed)
    assert "Failed experiment" in result.stderr + result.stdout  # Optuna saw them as failed


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["agent=dqn,a3c", "agent.workers=2"], ["agent.workers", "agent=dqn"]),
        (["agent=a3c,a2c", "agent.t_max=3"], ["agent.t_max", "++agent.t_max=3"]),
    ],
)
def test_a_sweep_over_groups_checks_its_keys_in_every_combination(tmp_path, overrides, needles):
    from tests.conftest import assert_one_line_error

    result = lab_sweep(tmp_path / "sweep", *overrides, "logger=none")
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "sweep").exists()


def test_optuna_database_storage_is_refused_up_front(tmp_path):
    result = lab_sweep(
        tmp_path, "hparams_search=dqn_cartpole", "hydra.sweeper.storage=sqlite:///x.db"
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: hydra.sweeper.storage=sqlite:///x.db")


def test_presets_compose():
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        bench = compose("config", ["experiment=bench_cartpole"], return_hydra_config=True)
        a3c = compose("config", ["experiment=bench_a3c"], return_hydra_config=True)
        gan = compose("config", ["hparams_search=dcgan_digits"], return_hydra_config=True)
        slurm = compose("config", ["hydra/launcher=slurm"], return_hydra_config=True)
        ray = compose("config", ["hydra/launcher=ray"], return_hydra_config=True)
    assert bench.hydra.sweeper.params == {"agent": "dqn,sb3_dqn", "seed": "0,1,2,3,4"}
    assert bench.stop_on_threshold and str(bench.hydra.mode) == "RunMode.MULTIRUN"
    assert a3c.hydra.sweeper.params == {"agent": "a3c,sb3_a2c", "seed": "0,1,2,3,4"}
    assert a3c.stop_on_threshold and a3c.env.id == "CartPole-v1" and not a3c.logger
    assert gan.model.name == "dcgan" and gan.optimized_metric == "eval/fid"
    assert gan.hydra.sweeper.direction == "minimize"
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher")
    assert slurm.hydra.launcher.signal_delay_s > 0
    assert ray.hydra.launcher.ray.init.address is None
    assert compose_config("experiment=bench_cartpole").env.id == "CartPole-v1"


@pytest.mark.slow
def test_ray_launcher_with_a_local_ray(tmp_path):
    result = lab_sweep(
        tmp_path, "hydra/launcher=ray", "hydra.launcher.ray.init.num_cpus=2", "seed=0,1", *TINY_DQN
    )
    assert result.returncode == 0, result.stderr
    assert [read_summary(j)["status"] for j in _job_dirs(tmp_path)] == ["completed"] * 2


@pytest.mark.slow
def test_a_stopped_sweep_goes_on_with_the_same_command(tmp_path):
    """Ctrl-C in job 1: rerunning the command keeps job 0, continues job 1, runs job 2."""
    import json
    import signal
    import time

    from tests.conftest import lab_background

    overrides = [*TINY_DQN, "agent.total_steps=6000", "seed=0,1,2", "logger=none"]
    proc = lab_background(tmp_path, *overrides, sweep=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "1" / "checkpoints" / "last.pt").is_file():  # job 1 is under way
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    first = read_summary(tmp_path / "0")
    assert first["status"] == "completed"
    assert read_summary(tmp_path / "1")["status"] == "interrupted"
    assert not (tmp_path / "2").exists()
    kept = (tmp_path / "0" / "metrics.jsonl").read_bytes()

    result = lab_sweep(tmp_path, *overrides)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "0" / "metrics.jsonl").read_bytes() == kept  # not run again
    for job in ("1", "2"):
        summary = read_summary(tmp_path / job)
        assert summary["status"] == "completed" and summary["steps"] >= 6000, job
    steps = [r["step"] for r in map(json.loads, (tmp_path / "1" / "metrics.jsonl").open())]
    assert steps == sorted(steps) and steps[0] <= 1000  # continued, from the start's rows on
    assert "continuing" in result.stdout + result.stderr


def test_the_architecture_preset_composes_with_its_conditional_space():
    from hydra import compose, initialize_config_dir
    from hydra.utils import get_method

    from lab.search_spaces import net_kinds
    from tests.conftest import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", ["hparams_search=net_cartpole_novel"], return_hydra_config=True)
    assert (cfg.agent.name, cfg.env.id) == ("a2c", "lab/CartPoleNoVel-v1")
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == "maximize" and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert get_method(sweeper.custom_search_space).__name__ == "net_architecture"
    assert {"mlp", "lstm"} <= set(net_kinds())
    shipped = {p.stem for p in (CONF_DIR / "net").glob("*.yaml")}
    assert {"gru", "transformer"} & shipped <= set(net_kinds())  # each memory net once it ships


def test_the_architecture_space_asks_each_kind_for_its_own_sizes_and_they_build():
    """What the sweeper does per trial: call the hook, turn trial.params into overrides; each
    trial's overrides compose and build the net on CartPole-without-velocities."""
    import optuna

    from lab.config import instantiate
    from lab.search_spaces import NET_SIZES, net_architecture, net_kinds

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {}
    for _ in range(16):
        trial = study.ask()
        net_architecture(None, trial)
        study.tell(trial, 0.0)
        names = {name for name in trial.params if name != "net"}
        seen.setdefault(trial.params["net"], names)
        assert seen[trial.params["net"]] == names  # one kind, always its keys, no other's
    assert set(seen) == set(net_kinds())
    assert seen["mlp"] == {"net.hidden_sizes"} and seen["lstm"] == {
        "net.hidden_size",
        "net.encoder_sizes",
    }
    if "transformer" in seen:
        assert {"net.depth", "net.heads", "net.width", "net.context"} <= seen["transformer"]
    first = {t.params["net"]: t for t in reversed(study.trials)}  # one trial of each kind
    for kind, trial in first.items():
        overrides = [f"{name}={value}" for name, value in trial.params.items()]
        cfg = compose_config("agent=a2c", "env=cartpole_novel", *overrides)
        torso = instantiate(cfg.net, obs_shape=(2,))  # (x, theta)
        assert type(torso).__name__.lower() == kind, overrides
    assert set(NET_SIZES) >= set(net_kinds())
