"""Warm starts (init_from): the loaded / skipped / new table, freezing, the one-line errors, the
parameter count in summary.json, and a warm start that beats training from scratch."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from lab import checkpoint, runner
from lab.compute import Compute
from lab.errors import ConfigError
from lab.rl.task import RLTask
from lab.task import trainable_parameters
from lab.transfer import freeze, mark_frozen, match, pair_nets, selects, warm_start
from tests.conftest import assert_one_line_error, compose_config, lab, read_summary

CPU = Compute(torch.device("cpu"))
# DQN on CartPole, short: a policy that balances for a few hundred steps, not a solved one.
SOURCE = [
    "agent=dqn",
    "tuned=none",  # pinned here, whatever conf/tuned/dqn_cartpole.yaml becomes
    "agent.gamma=0.98",
    "agent.lr_anneal=true",
    "agent.total_steps=8000",
    "eval.interval=2000",
    "eval.episodes=5",
    "log_interval=2000",
    "logger=none",
    "seed=0",
]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("source")
    runner.run(compose_config(*SOURCE), run_dir)
    return run_dir


def _z(*shape: int) -> torch.Tensor:
    return torch.zeros(shape)


def test_match_loads_equal_names_and_shapes_skips_other_shapes_and_lists_the_rest():
    source = {"q": {"torso.w": _z(4, 2), "head.w": _z(2, 4)}, "q_target": {"torso.w": _z(4, 2)}}
    target = {"q": {"torso.w": _z(4, 2), "head.w": _z(3, 4), "value.w": _z(1, 4)}}
    plan = match(source, target)
    assert [(r.name, r.status, r.source, r.source_shape) for r in plan.rows] == [
        ("q.torso.w", "loaded", "q.torso.w", (4, 2)),
        ("q.head.w", "skipped", "q.head.w", (2, 4)),
        ("q.value.w", "new", None, None),
    ]
    assert plan.unused == ["q.head.w", "q_target.torso.w"]
    assert plan.counts() == {"loaded": 1, "skipped": 1, "new": 1, "unused": 2, "frozen": 0}


def test_a_net_the_source_lacks_reads_the_sources_first_net():
    assert pair_nets(["q", "q_target"], ["model"]) == {"model": "q"}
    assert pair_nets(["model"], ["q", "q_target"]) == {"q": "model", "q_target": "model"}
    plan = match({"q": {"torso.w": _z(4, 2)}}, {"model": {"torso.w": _z(4, 2)}})
    assert [(r.name, r.status, r.source) for r in plan.rows] == [
        ("model.torso.w", "loaded", "q.torso.w")
    ]


def test_freeze_entries_match_whole_name_components_with_or_without_the_net():
    assert selects("torso", "q.torso.body.1.weight")
    assert selects("q.torso", "q.torso.body.1.weight")
    assert not selects("q.torso", "q_target.torso.body.1.weight")
    assert not selects("tor", "q.torso.body.1.weight")
    source = {"q": {"torso.w": _z(4, 2), "head.w": _z(2, 4)}}
    plan = match(source, {"q": {"torso.w": _z(4, 2), "head.w": _z(3, 4)}})
    params = {"q.torso.w", "q.head.w"}
    assert [r.frozen for r in mark_frozen(plan, ["torso"], params).rows] == [True, False]
    with pytest.raises(ConfigError, match=r"'q.head' would freeze q.head.w, which was not loaded"):
        mark_frozen(plan, ["q.head"], params)
    with pytest.raises(ConfigError, match=r"'trunk' names no parameter.*one of head, torso"):
        mark_frozen(plan, ["trunk"], params)


def test_a_frozen_parameter_stays_put_even_when_requires_grad_is_switched_back_on():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    before = [p.detach().clone() for p in net.parameters()]
    freeze({"m": net}, ["m.0.weight", "m.0.bias"])
    assert [p.requires_grad for p in net.parameters()] == [False, False, True, True]
    net.requires_grad_(True)  # as a GAN does around each generator step
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1, weight_decay=0.1)
    net(torch.randn(8, 3)).pow(2).mean().backward()
    optimizer.step()
    after = list(net.parameters())
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])
    assert not torch.equal(after[2], before[2])


def _task(*overrides: str) -> RLTask:
    return RLTask(compose_config("eval.episodes=1", *overrides), CPU)


def _init_from(path, freeze=(), strict=False):
    return OmegaConf.create({"path": str(path), "freeze": list(freeze), "strict": strict})


def test_a_warm_start_copies_the_weights_and_nothing_else(source_run):
    best = checkpoint.load(source_run / "checkpoints" / "best.pt")
    task = _task("agent=dqn", "env=cartpole_long")
    try:
        init_from = _init_from(source_run, freeze=["torso"], strict=True)
        record = warm_start(task.nets(), init_from)  # the target copy's torso is frozen too
        for net in ("q", "q_target"):
            for key, value in task.nets()[net].state_dict().items():
                torch.testing.assert_close(value, best["nets"][net][key])
        q = task.agent.q
        assert not any(p.requires_grad for p in q.torso.parameters())
        assert all(p.requires_grad for p in q.head.parameters())
        assert task.agent.step == 0 and task.agent.updates == 0
        assert not task.agent.optimizer.state_dict()["state"]  # Adam starts afresh
    finally:
        task.close()
    assert record["path"] == str((source_run / "checkpoints" / "best.pt").resolve())
    assert record["source"] == "dqn on CartPole-v1"
    assert (record["loaded"], record["skipped"], record["new"], record["unused"]) == (12, 0, 0, 0)
    assert record["frozen"] == 8


def test_another_algorithm_gives_what_fits_and_freezes_it(source_run):
    task = _task("agent=a2c", "net=mlp")  # A2C's model.torso is DQN's q.torso
    try:
        record = warm_start(task.nets(), _init_from(source_run, freeze=["torso"]))
        torso = task.agent.model.torso
        assert all(not p.requires_grad for p in torso.parameters())
        assert all(p.requires_grad for p in task.agent.model.policy.parameters())
    finally:
        task.close()
    assert (record["loaded"], record["frozen"], record["skipped"]) == (4, 4, 0)
    assert record["new"] == 8  # the critic's own torso, the policy and value heads


def test_strict_fails_unless_everything_matched(source_run):
    task = _task("agent=dqn", "tuned=none", "net.hidden_sizes=[128,64]")  # as SOURCE, narrower
    try:
        with pytest.raises(ConfigError, match=r"init_from.strict=true: 6 tensors skipped"):
            warm_start(task.nets(), _init_from(source_run, strict=True))
    finally:
        task.close()


@pytest.mark.parametrize(
    "agent, message",
    [
        ("agent=sb3_ppo", r"its nets \(q, q_target, from dqn on CartPole-v1\) share no tensor"),
    ],
)
def test_nets_that_share_nothing_are_refused(source_run, agent, message):
    task = _task(agent)
    try:
        with pytest.raises(ConfigError, match=message):
            warm_start(task.nets(), _init_from(source_run))
    finally:
        task.close()


def test_a_missing_path_or_a_run_without_checkpoints_is_a_one_line_error(tmp_path):
    missing = tmp_path / "nowhere"
    result = lab(tmp_path / "run", "logger=none", f"init_from.path={missing}")
    assert_one_line_error(result, f"init_from.path={missing}", "no such run directory")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"has no checkpoints/best\.pt or last\.pt"):
        warm_start({}, _init_from(tmp_path / "empty"))


def test_a3c_workers_leave_a_frozen_torso_alone(source_run, tmp_path):
    """The Hogwild workers start before the freeze and apply gradients to the shared weights
    themselves: the frozen torso must still come out of training as it was loaded."""
    source = checkpoint.load(source_run / "checkpoints" / "best.pt")["nets"]["q"]
    cfg = compose_config(
        "agent=a3c",
        "net=mlp",
        "agent.workers=2",
        "agent.envs_per_worker=2",
        "agent.total_steps=2000",
        "eval.interval=2000",
        "eval.episodes=1",
        "logger=none",
        f"init_from.path={source_run}",
        "init_from.freeze=[torso]",
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = runner.run(cfg, run_dir)
    assert result.steps >= 2000 and result.init_from["frozen"] == 4
    trained = checkpoint.load(run_dir / "checkpoints" / "last.pt")["nets"]["model"]
    for key in ("torso.body.1.weight", "torso.body.3.weight", "torso.body.3.bias"):
        torch.testing.assert_close(trained[key], source[key])


def test_an_autoencoder_warm_starts_a_vae_where_the_shapes_agree(tmp_path):
    from lab.gen.task import build_model

    def model(name: str):
        cfg = compose_config(f"model={name}", "model.width=8", "model.z_dim=4")
        return build_model(cfg.model, (1, 8, 8), CPU)

    autoencoder, vae = model("autoencoder"), model("vae")
    path = tmp_path / "best.pt"
    nets = {k: v.state_dict() for k, v in autoencoder.nets.items()}
    checkpoint.save_atomic({"nets": nets, "config": {"model": {"name": "autoencoder"}}}, path)
    record = warm_start(vae.nets, _init_from(path, freeze=["decoder"]))
    assert record["skipped"] >= 1  # the encoder's last layer: a mean and a log-variance per code
    assert record["loaded"] > record["skipped"] and record["new"] == 0
    decoder = vae.nets["decoder"].state_dict()
    for key, value in autoencoder.nets["decoder"].state_dict().items():
        torch.testing.assert_close(decoder[key], value)
    assert trainable_parameters(vae.nets).keys() == {"encoder"}  # the decoder is frozen


def test_summary_counts_trainable_parameters(source_run):
    summary = read_summary(source_run)
    # DQN's online MLP on CartPole: 4-128-128-2 (its target copy is not trained)
    assert summary["params_by_net"] == {"q": 4 * 128 + 128 + 128 * 128 + 128 + 128 * 2 + 2}
    assert summary["params"] == 17410


def test_a_gans_count_has_both_generator_and_discriminator():
    from lab.gen.task import build_model

    cfg = compose_config("model=dcgan", "model.width=8", "model.z_dim=4")
    gan = build_model(cfg.model, (1, 8, 8), CPU)
    counts = trainable_parameters(gan.nets)
    assert counts.keys() == {"generator", "discriminator"} and all(counts.values())


def _final_return(run_dir, *overrides: str) -> float:
    cfg = compose_config(
        "agent=dqn",
        "env=cartpole_long",
        "agent.gamma=0.98",
        "agent.total_steps=3000",
        "eval.interval=3000",
        "eval.episodes=10",
        "logger=none",
        "seed=0",
        *overrides,
    )
    run_dir.mkdir()
    return runner.run(cfg, run_dir).metrics["eval/return_mean"]


def test_a_warm_start_from_cartpole_beats_scratch_on_the_long_pole(source_run, tmp_path):
    """Same seed, same 3,000 steps on a pole five times as long and heavy: only the weights
    differ, so without init_from both runs would score the same."""
    scratch = _final_return(tmp_path / "scratch")
    warm = _final_return(tmp_path / "warm", f"init_from.path={source_run}")
    assert warm >= 3 * scratch, (warm, scratch)  # measured at seed 0: 89.6 vs 21.7


def test_a_resumed_warm_start_keeps_its_layers_frozen_and_its_record(source_run, tmp_path):
    source = checkpoint.load(source_run / "checkpoints" / "best.pt")["nets"]["q"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    common = [
        "agent=a2c",
        "net=mlp",
        "logger=none",
        "eval.interval=400",
        "eval.episodes=1",
        "log_interval=400",
        "checkpoint.interval=400",
        f"init_from.path={source_run}",
        "init_from.freeze=[torso]",
    ]
    first = runner.run(compose_config(*common, "agent.total_steps=400"), run_dir)
    resumed = compose_config(*common, "agent.total_steps=800", f"resume={run_dir}")
    second = runner.run(resumed, run_dir)
    assert second.steps >= 800 and second.init_from == first.init_from
    assert second.params == first.params  # the frozen torso counted out both times
    trained = checkpoint.load(run_dir / "checkpoints" / "last.pt")["nets"]["model"]
    for key in ("torso.body.1.weight", "torso.body.3.weight", "torso.body.3.bias"):
        torch.testing.assert_close(trained[key], source[key])
