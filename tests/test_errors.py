"""Bad input: one line naming the problem, exit code != 0, no half-written run left behind."""

import pytest

from tests.conftest import assert_one_line_error, lab

BAD_INPUTS = {
    "unknown agent option": (["agent=dqnn"], ["agent=dqnn", "dqn", "sb3_dqn"]),
    "unknown net option": (["net=resnet"], ["net=resnet", "mlp"]),
    "agent and model together": (["agent=dqn", "model=dcgan"], ["agent", "model"]),
    "model with an env": (["model=dcgan", "env=cartpole"], ["model=dcgan", "CartPole-v1", "env="]),
    "model with a net": (["model=vae", "net=mlp"], ["model=vae", "net", "model.width"]),
    "agent with a dataset": (["agent=dqn", "+dataset=digits"], ["dataset", "model="]),
    "no steps": (["agent.total_steps=0"], ["agent.total_steps=0", "positive"]),
    "misspelled key": (
        ["agent.learning_rate=1e-3"],
        ["agent.learning_rate", "did you mean agent.lr "],
    ),
    "added key the agent does not take": (
        ["+agent.learning_rate=1e-3"],
        ["agent.learning_rate", "DQN", "agent.lr"],
    ),
    "added key the net does not take": (["+net.hiden_sizes=[8]"], ["MLP", "net.hidden_sizes?"]),
    "SB3's own key at the wrong level": (
        ["agent=sb3_ppo", "agent.ent_coef=0.1"],
        ["agent.hyperparams.ent_coef?"],
    ),
    "a word for a number": (["agent.lr=abc"], ["agent.lr=abc", "number", "0.003"]),  # tuned lr
    "a number for a switch": (["eval.video=3"], ["eval.video=3", "true or false"]),
    "unreadable override": (["agent.lr=[1,2"], ["cannot read the overrides"]),
    "added key that exists": (["+agent.lr=1"], ["+agent.lr", "without the +"]),
    "removed key that does not exist": (["~agent.lrr"], ["~agent.lrr", "agent.lr"]),
    "added key the model does not take": (["model=dcgan", "+model.lrr=1"], ["GAN", "model.lr"]),
    "unknown gymnasium id": (["env.id=NoSuchEnv-v0"], ["env.id=NoSuchEnv-v0"]),
    "dqn on continuous actions": (["env.id=Pendulum-v1"], ["discrete", "Pendulum-v1"]),
    "nature_cnn on vector observations": (["net=nature_cnn"], ["net=nature_cnn", "net=mlp"]),
    "negative learning rate": (["agent.lr=-0.001"], ["agent.lr=-0.001", "> 0"]),
    "zero evaluation episodes": (["eval.episodes=0"], ["eval.episodes=0"]),
    "bad device": (["device=tpu"], ["device=tpu"]),
}


@pytest.mark.parametrize("overrides, needles", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_line_and_leaves_no_run(tmp_path, overrides, needles):
    run_dir = tmp_path / "run"
    result = lab(run_dir, *overrides, "logger=none")
    assert_one_line_error(result, *needles)
    assert not run_dir.exists(), sorted(p.name for p in run_dir.iterdir())


def test_resume_from_a_directory_without_checkpoint(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = lab(tmp_path / "run", f"resume={empty}", "logger=none")
    assert_one_line_error(result, "no checkpoint", str(empty))
    assert sorted(empty.iterdir()) == []


def test_resume_from_a_corrupt_checkpoint(tmp_path):
    run = tmp_path / "old"
    (run / "checkpoints").mkdir(parents=True)
    corrupt = run / "checkpoints" / "last.pt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    result = lab(tmp_path / "run", f"resume={run}", "logger=none")
    assert_one_line_error(result, "corrupt", str(corrupt))
    assert corrupt.read_bytes() == b"PK\x03\x04 this is not a checkpoint"


def test_a_run_dir_holding_a_run_is_not_overwritten(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text('{"status": "completed"}')
    result = lab(run_dir, "logger=none")
    assert_one_line_error(result, "already holds a run", "resume=")
    assert (run_dir / "summary.json").read_text() == '{"status": "completed"}'
