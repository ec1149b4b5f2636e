"""A3C and A2C: learning, determinism, faults, resume, and the recurrent core."""

import os
import signal
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lab.rl.actor_critic import (
    ActorCritic,
    RolloutCollector,
    actor_critic_loss,
    build_actor_critic,
    mask_state,
    sample_actions,
)
from lab.rl.env import make_vec_env
from tests.conftest import (
    lab,
    lab_background,
    lab_sweep,
    read_metrics,
    read_summary,
    wait_for_rows,
)

# An A3C run long enough to be stopped from outside (it never reaches its budget in a test).
LONG_A3C = [
    "agent=a3c",
    "agent.workers=2",
    "agent.envs_per_worker=16",
    "agent.total_steps=10000000",
    "log_interval=500",
    "eval.interval=1000",
    "eval.episodes=2",
    "logger=none",
]
SMALL_A3C = [
    "agent=a3c",
    "agent.total_steps=3000",
    "eval.interval=1000",
    "eval.episodes=3",
    "log_interval=500",
    "checkpoint.interval=1000",
    "logger=none",
]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def _workers(pid: int) -> list[int]:
    return [
        c
        for c in _children(pid)
        if "resource_tracker" not in Path(f"/proc/{c}/cmdline").read_text()
    ]


def test_lstm_state_is_zero_when_a_new_episode_starts():
    cfg = OmegaConf.create({"id": "CartPole-v1", "kwargs": {}})
    envs = make_vec_env(cfg, 2, train=True)
    from lab.nets import LSTM

    model = ActorCritic(LSTM((4,), hidden_size=8, encoder_sizes=(8,)), 2)
    collector = RolloutCollector(envs, seed=0, device=torch.device("cpu"))
    seen_reset = False
    for _ in range(40):
        finished = {"rollout/episode_return": [], "rollout/episode_length": []}
        rollout, _ = collector.collect(model, 5, finished)
        # Envs whose last step only reset them start the next rollout on a zero state.
        resetting_now = torch.as_tensor(~rollout.valid[-1])
        if resetting_now.any():
            seen_reset = True
            h, c = collector.state
            assert torch.all(h[resetting_now] == 0) and torch.all(c[resetting_now] == 0)
            assert torch.any(h[~resetting_now] != 0) or not (~resetting_now).any()
        loss, _ = actor_critic_loss(model, rollout, 0.99, None, 0.5, 0.01)
        assert torch.isfinite(loss)
    assert seen_reset
    envs.close()


@pytest.mark.parametrize("torso", ["mlp", "mlp_own_critic", "lstm"])
def test_the_loss_replays_exactly_what_acting_saw(torso):
    """Acting runs without a graph; the loss runs the model once over the whole rollout. That
    is only right if ``unroll`` gives, step by step, the logits and values acting would have."""
    from lab.nets import LSTM, MLP

    torch.manual_seed(0)
    envs = make_vec_env(OmegaConf.create({"id": "CartPole-v1", "kwargs": {}}), 3, train=True)
    if torso == "lstm":
        model = ActorCritic(LSTM((4,), hidden_size=8, encoder_sizes=(8,)), 2)
    else:
        own = MLP((4,), (16,)) if torso == "mlp_own_critic" else None
        model = ActorCritic(MLP((4,), (16,)), 2, own)
    collector = RolloutCollector(envs, seed=0, device=torch.device("cpu"))
    finished = {"rollout/episode_return": [], "rollout/episode_length": []}
    for _ in range(8):  # past an episode end, so that recurrent states get reset mid-rollout
        rollout, _ = collector.collect(model, 5, finished)
        keep = torch.cat([rollout.valid, torch.ones_like(rollout.valid[:1])])
        logits, values = model.unroll(rollout.obs, rollout.state, keep)
        state = rollout.state
        with torch.no_grad():
            for t in range(6):
                step_logits, step_value, state = model(rollout.obs[t], state)
                torch.testing.assert_close(logits[t], step_logits)
                torch.testing.assert_close(values[t], step_value)
                if t < 5:
                    state = mask_state(state, rollout.valid[t])
                if t == 4 and torso == "lstm":  # carried into the next rollout: the replayed one
                    torch.testing.assert_close(collector.state, state)
    assert finished["rollout/episode_return"]  # episodes ended, so states were reset mid-rollout
    envs.close()


def test_sample_actions_draws_from_the_softmax():
    torch.manual_seed(0)
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    actions = sample_actions(probs.log().repeat(50_000, 1)).view(50_000, 2)
    for row in range(2):
        freq = torch.bincount(actions[:, row], minlength=3) / 50_000
        torch.testing.assert_close(freq, probs[row], atol=0.01, rtol=0)


def test_a2c_with_lstm_runs(tmp_path):
    run = tmp_path / "run"
    result = lab(
        run,
        "agent=a2c",
        "net=lstm",
        "agent.total_steps=1500",
        "eval.interval=750",
        "eval.episodes=2",
        "log_interval=500",
        "logger=none",
    )
    assert result.returncode == 0, result.stderr
    assert read_summary(run)["status"] == "completed"


def test_a3c_with_one_worker_is_deterministic(tmp_path):
    rows = []
    for name in ("a", "b"):
        run = tmp_path / name
        result = lab(run, *SMALL_A3C, "agent.workers=1", "seed=3")
        assert result.returncode == 0, result.stderr
        rows.append(
            [
                {k: v for k, v in r.items() if k != "time" and not k.startswith("perf/")}
                for r in read_metrics(run)
            ]
        )
    assert len(rows[0]) > 4 and rows[0] == rows[1]


@pytest.mark.parametrize("envs", [1, 4])
def test_a3c_counts_env_steps_exactly_and_runs_lstm(tmp_path, envs):
    run = tmp_path / "run"
    result = lab(run, *SMALL_A3C, "agent.workers=2", f"agent.envs_per_worker={envs}", "net=lstm")
    assert result.returncode == 0, result.stderr
    # Credits make the counter exact; a worker takes whole vector steps, so a grant may be
    # overshot by less than one of them (envs - 1 env steps), never more.
    steps = read_summary(run)["steps"]
    assert 3000 <= steps < 3000 + envs
    evals = [r["step"] for r in read_metrics(run) if "eval/return_mean" in r]
    targets = [1000, 2000, 3000]
    assert all(0 <= step - t < envs for step, t in zip(evals, targets, strict=True)), evals


def test_a3c_worker_killed_fails_the_run_fast_and_leaves_no_process(tmp_path):
    run = tmp_path / "run"
    proc = lab_background(run, *LONG_A3C)
    wait_for_rows(run, 2, proc)
    workers = _workers(proc.pid)
    assert len(workers) == 2
    everyone = _children(proc.pid)
    os.kill(workers[0], signal.SIGKILL)
    killed_at = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - killed_at < 10
    assert proc.returncode != 0
    assert "a3c worker" in err
    summary = read_summary(run)
    assert summary["status"] == "failed"
    assert "a3c worker" in summary["error"] and "SIGKILL" in summary["error"]
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["task"]["model"]
    time.sleep(0.5)
    assert not [pid for pid in everyone if _alive(pid)]


def test_a3c_interrupt_then_resume_continues_the_step_counter(tmp_path):
    run = tmp_path / "run"
    proc = lab_background(run, *LONG_A3C)
    wait_for_rows(run, 3, proc)
    children = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    interrupted = read_summary(run)
    assert interrupted["status"] == "interrupted"
    time.sleep(0.5)
    assert not [pid for pid in children if _alive(pid)]
    stopped_at = interrupted["steps"]
    result = lab(run, f"resume={run}", f"agent.total_steps={stopped_at + 1500}")
    assert result.returncode == 0, result.stderr
    resumed = read_summary(run)
    assert resumed["status"] == "completed"
    assert 0 <= resumed["steps"] - (stopped_at + 1500) < 16  # less than one vector step over
    steps = [r["step"] for r in read_metrics(run) if "train/policy_loss" in r]
    assert steps == sorted(steps) and steps[-1] == resumed["steps"]


@pytest.mark.slow
def test_a3c_with_two_workers_learns_cartpole(tmp_path):
    run = tmp_path / "run"
    result = lab(
        run,
        "agent=a3c",
        "agent.workers=2",
        "seed=0",
        "stop_on_threshold=true",
        "logger=none",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    summary = read_summary(run)
    assert summary["status"] == "solved", summary


@pytest.mark.slow
def test_a2c_learns_cartpole(tmp_path):
    run = tmp_path / "run"
    result = lab(run, "agent=a2c", "seed=0", "stop_on_threshold=true", "logger=none", timeout=600)
    assert result.returncode == 0, result.stderr
    assert read_summary(run)["status"] == "solved", read_summary(run)


def test_torso_sharing_follows_the_observations():
    from gymnasium import spaces

    mlp = OmegaConf.create({"_target_": "lab.nets.MLP", "hidden_sizes": [8]})
    cnn = OmegaConf.create({"_target_": "lab.nets.NatureCNN", "features": 16})
    lstm = OmegaConf.create({"_target_": "lab.nets.LSTM", "hidden_size": 8})
    vector, image = spaces.Box(-1, 1, (4,)), spaces.Box(0, 255, (1, 40, 40), dtype="uint8")
    actions = spaces.Discrete(2)
    assert build_actor_critic(mlp, vector, actions, "a2c", "x", None).value_torso is not None
    assert build_actor_critic(cnn, image, actions, "a2c", "x", None).value_torso is None
    assert build_actor_critic(lstm, vector, actions, "a2c", "x", None).value_torso is None
    assert build_actor_critic(mlp, vector, actions, "a2c", "x", True).value_torso is None


def _a3c(*overrides: str):
    from lab.compute import Compute
    from lab.rl.task import build_agent
    from tests.conftest import compose_config

    cfg = compose_config("agent=a3c", *overrides)
    return build_agent(cfg, Compute(torch.device("cpu")))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_idle_a3c_workers_sleep_and_wake_when_granted_steps():
    agent = _a3c("agent.workers=2")
    try:
        updates = agent.learn(1000)["counter/updates"]
        pids = [p.pid for p in agent.pool.processes]
        before = [_cpu_seconds(pid) for pid in pids]
        time.sleep(2.0)  # the main process would evaluate here: the workers should not compete
        used = [_cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
        assert max(used) < 0.05, used
        started = time.monotonic()
        assert agent.learn(1000)["counter/updates"] > updates
        assert time.monotonic() - started < 1.0  # and they answer the next grant
    finally:
        agent.close()


def test_a3c_notices_a_dead_worker_while_the_others_keep_reporting():
    from lab.rl.workers import WorkerFailed

    agent = _a3c("agent.workers=2")
    try:
        agent.learn(10)  # starts the workers; afterwards both are idle, holding no credits
        workers = list(agent.pool.processes)
        idle = workers[0]
        os.kill(idle.pid, signal.SIGKILL)
        idle.join(timeout=5)
        started = time.monotonic()
        with pytest.raises(WorkerFailed, match=r"worker 0 died .*SIGKILL"):
            agent.learn(200_000)  # the survivor alone would take minutes and hide the death
        assert time.monotonic() - started < 5
    finally:
        agent.close()
    assert not any(p.is_alive() for p in workers)


def test_a3c_workers_started_by_a_forkserver_train(tmp_path):
    # A forkserver is the workers' OS parent: they must still know the main process is alive.
    run = tmp_path / "run"
    result = lab(run, *SMALL_A3C, "agent.workers=2", "agent.start_method=forkserver")
    assert result.returncode == 0, result.stderr
    assert read_summary(run)["status"] == "completed"
    assert "(forkserver)" in (run / "lab.log").read_text()


def test_every_job_of_a_sweep_forks_its_workers(tmp_path):
    # The first job's progress bar must leave no thread behind that would force a forkserver.
    sweep = tmp_path / "sweep"
    result = lab_sweep(sweep, *SMALL_A3C, "agent.total_steps=1000", "agent.workers=1", "seed=0,1")
    assert result.returncode == 0, result.stderr
    for job in ("0", "1"):
        assert "a3c: 1 workers x 16 envs (fork)" in (sweep / job / "lab.log").read_text()


def test_envs_per_worker_defaults_to_16_for_vectors_and_1_for_images():
    from gymnasium import spaces

    from lab.rl.a3c import default_envs_per_worker

    assert default_envs_per_worker(spaces.Box(-1, 1, (4,))) == 16
    assert default_envs_per_worker(spaces.Box(0, 255, (4, 84, 84), dtype="uint8")) == 1
