"""An RL agent on an environment, as the runner sees it: learn, evaluate, save, load."""

from pathlib import Path

import hydra
from omegaconf import DictConfig
from torch import nn

from lab.compute import Compute
from lab.config import check_keywords
from lab.rl.agent import Agent, AgentContext
from lab.rl.env import check_env_id
from lab.rl.evaluate import Evaluator
from lab.stop import StopCheck, never

# Agents whose training ignores requires_grad: A3C's workers apply their local gradients to
# every shared weight, so a frozen layer would move anyway.
EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes never share seeds with training ones
CONTEXT_KEYS = ("_target_", "name", "total_steps")  # agent keys that go to AgentContext


def build_agent(cfg: DictConfig, compute: Compute) -> Agent:
    """The agent ``cfg.agent`` names, built as ``cls(AgentContext, **hyperparameters)``."""
    # By hand rather than hydra.utils.instantiate, which would turn `compute` into a config
    # node; nested configs (optimizer, net) are instantiated by the agent itself.
    agent_cls = hydra.utils.get_class(cfg.agent._target_)
    ctx = AgentContext(
        env=cfg.env,
        net=cfg.net,
        compute=compute,
        seed=cfg.seed,
        name=cfg.agent.name,
        total_steps=int(cfg.agent.total_steps),
    )
    hyperparameters = {k: v for k, v in cfg.agent.items() if k not in CONTEXT_KEYS}
    check_keywords(agent_cls, "agent", hyperparameters, supplied=("ctx",))
    return agent_cls(ctx, **hyperparameters)


class RLTask:
    """Trains an ``Agent`` on its env; evaluates greedy policies on envs of its own."""

    family = "rl"
    step_unit = "env_steps"
    higher_is_better = True
    threshold_metric = "eval/return_mean"
    headline_metric = "rollout/episode_return"

    def __init__(self, cfg: DictConfig, compute: Compute):
        spec = check_env_id(cfg.env.id)
        self.algo, self.name = cfg.agent.name, cfg.env.id
        self.total_steps = int(cfg.agent.total_steps)
        self.agent = build_agent(cfg, compute)
        self.evaluator = Evaluator(cfg.env, cfg.eval.episodes, cfg.seed + EVAL_SEED_OFFSET)
        self.video = bool(cfg.eval.video)
        # A resumable checkpoint holds the replay buffer unless the user opted out (its size).
        self.save_buffer = bool(cfg.checkpoint.replay_buffer)
        threshold = cfg.eval.threshold
        self.threshold = threshold if threshold is not None else spec.reward_threshold

    @property
    def step(self) -> int:
        return self.agent.step

    def counters(self) -> dict[str, int]:
        return {"counter/updates": self.agent.updates}

    def train_step(self, budget: int, stop: StopCheck = never) -> dict:
        return self.agent.learn(budget, stop)

    def evaluate(self, media_dir: Path) -> tuple[dict[str, float], dict[str, Path]]:
        metrics = self.evaluator.run(self.agent.policy())
        media = {}
        if self.video:
            path = media_dir / f"episode_{self.step:09d}"
            media["eval/video"] = self.evaluator.record_video(self.agent.policy(), path)
        return metrics, media

    def state_dict(self, resumable: bool) -> dict:
        return self.agent.state_dict(resumable=resumable and self.save_buffer)

    def load_state_dict(self, state: dict) -> None:
        self.agent.load_state_dict(state)

    def nets(self) -> dict[str, nn.Module]:
        return self.agent.nets()

    def close(self) -> None:
        self.agent.close()
        self.evaluator.close()
