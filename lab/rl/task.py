"""An RL agent on an environment, as the runner sees it: learn, evaluate, save, load."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from lab.compute import Compute
from lab.errors import ConfigError
from lab.rl.env import check_env_id
from lab.rl.evaluate import Evaluator

EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes never share seeds with training ones


class RLTask:
    """Wraps any agent with ``learn(budget)``, ``act(obs)``, ``step`` and state dicts."""

    family = "rl"

    def __init__(self, cfg: DictConfig, compute: Compute):
        if cfg.get("env") is None:
            raise ConfigError("agent is set but env is not: add env=<name>, e.g. env=cartpole")
        spec = check_env_id(cfg.env.id)
        self.algo, self.name = cfg.agent.name, cfg.env.id
        self.total_steps = int(cfg.agent.total_steps)
        if self.total_steps <= 0:
            raise ConfigError(f"agent.total_steps={self.total_steps}: must be > 0")
        # Built by hand rather than hydra.utils.instantiate, which would turn `compute` into a
        # config node; nested configs (optimizer, net) are instantiated by the agent itself.
        agent_cls = hydra.utils.get_class(cfg.agent._target_)
        hyperparameters = {k: v for k, v in cfg.agent.items() if k != "_target_"}
        self.agent = agent_cls(
            env_cfg=cfg.env, net_cfg=cfg.net, compute=compute, seed=cfg.seed, **hyperparameters
        )
        self.evaluator = Evaluator(cfg.env, cfg.eval.episodes, cfg.seed + EVAL_SEED_OFFSET)
        self.video = bool(cfg.eval.video)
        self.threshold_metric = "eval/return_mean"
        threshold = cfg.eval.threshold
        self.threshold = threshold if threshold is not None else spec.reward_threshold

    @property
    def step(self) -> int:
        return self.agent.step

    def counters(self) -> dict[str, int]:
        """Cumulative counts the agent reports in ``learn`` (its updates), as they stand now."""
        updates = getattr(self.agent, "updates", None)
        return {} if updates is None else {"counter/updates": updates}

    def train_step(self, budget: int) -> dict:
        return self.agent.learn(budget)

    def evaluate(self, media_dir: Path) -> tuple[dict[str, float], dict[str, Path]]:
        metrics = self.evaluator.run(self._policy())
        media = {}
        if self.video:
            path = media_dir / f"episode_{self.step:09d}"
            media["eval/video"] = self.evaluator.record_video(self._policy(), path)
        return metrics, media

    def _policy(self):
        """A fresh greedy policy: recurrent agents give each evaluation its own state."""
        fresh = getattr(self.agent, "eval_policy", None)
        return fresh() if fresh else self.agent.act

    def state_dict(self, include_buffer: bool = True) -> dict:
        return self.agent.state_dict(include_buffer=include_buffer)

    def load_state_dict(self, state: dict) -> None:
        self.agent.load_state_dict(state)

    def close(self) -> None:
        self.agent.close()
        self.evaluator.close()
