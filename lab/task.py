"""What the runner trains: the ``Task`` protocol, the one contract between the two.

The runner (``lab/runner.py``) reads and calls exactly these members and nothing else; an RL
agent on an environment (``lab/rl/task.py``) and a generative model on a data set
(``lab/gen/task.py``) both provide all of them. ``tests/test_contracts.py`` checks that they
do, member by member and signature by signature. ``docs/contracts.md`` describes how to add one.
"""

from pathlib import Path
from typing import Literal, Protocol

from torch import nn
from torch.optim.swa_utils import AveragedModel

from lab.stop import StopCheck, never

Family = Literal["rl", "generative"]
Metrics = dict[str, float | list[float]]  # lists (episode returns) are pooled between log rows
Media = dict[str, Path]  # W&B key -> file written under the run's media/ directory


class Task(Protocol):
    """Train to a step budget, evaluate on request, save and restore everything it owns."""

    family: Family
    algo: str  # e.g. "dqn", "dcgan": summary.json's ``algo``
    name: str  # what it trains on, e.g. "CartPole-v1", "digits": summary.json's ``task``
    total_steps: int
    step_unit: str  # what a step counts: "env_steps" or "updates"; names perf/<unit>_per_s
    higher_is_better: bool  # for the threshold and best.pt (False for FID)
    threshold: float | None  # threshold_metric's target, None = none
    threshold_metric: str  # the evaluation metric best.pt and the threshold are judged on
    headline_metric: str  # the training metric the progress bar shows

    @property
    def step(self) -> int:
        """Steps taken so far (``step_unit``), restored by ``load_state_dict``."""
        ...

    def train_step(self, budget: int, stop: StopCheck = never) -> Metrics:
        """Train for about ``budget`` steps (at least one); metrics since the last call.

        Returns early, after the optimizer step (or vector-env step) in progress, once
        ``stop()`` is true: a signal is honoured within one step, however long the budget.

        ``counter/<name>`` entries are cumulative counts: the runner logs them as
        ``train/<name>`` with a rate ``perf/<name>_per_s``.
        """
        ...

    def evaluate(self, media_dir: Path) -> tuple[dict[str, float], Media]:
        """Score the current model; the metrics include ``threshold_metric``."""
        ...

    def counters(self) -> dict[str, int]:
        """The ``counter/<name>`` values as they stand now (before the first ``train_step``)."""
        ...

    def state_dict(self, resumable: bool) -> dict:
        """Everything needed to continue exactly when ``resumable``; else what evaluation and
        sampling need (``best.pt``)."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` saved; work in flight (episodes) starts afresh."""
        ...

    def nets(self) -> dict[str, nn.Module]:
        """Its networks by name, as its checkpoints store them under ``nets``: what
        ``init_from`` copies weights into and freezes, and what ``params`` counts."""
        ...

    def close(self) -> None:
        """Release processes, environments and files; safe to call once after any failure."""
        ...


def trainable_parameters(nets: dict[str, nn.Module]) -> dict[str, int]:
    """Parameters an optimizer updates, per net that has any: not those without
    ``requires_grad`` (DQN's target copy, StyleGAN's average, frozen layers) nor a weight
    average kept by torch's ``AveragedModel`` (the GANs' ``generator_ema``)."""
    counts = {
        name: sum(p.numel() for p in net.parameters() if p.requires_grad)
        for name, net in nets.items()
        if not isinstance(net, AveragedModel)
    }
    return {name: n for name, n in counts.items() if n > 0}
