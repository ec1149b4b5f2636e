"""An agent's training throughput: ``python -m lab.rl.bench [warmup=600] [steps=1200] [k=v ...]``.

Builds the agent the config names (default ``agent=dqn env=cartpole``, tuned settings
included), trains ``warmup`` env steps (filling the replay buffer past ``learning_starts``),
then times ``learn(steps)``: env steps and updates a second, no evaluation, no logging. Extra
``key=value`` arguments are config overrides (``agent=dqn env=catch threads=1``). Prints one
line; run it a few times, alone, and take the median.
"""

import sys
import time

from lab.compute import Compute, resolve_device, seed_everything, set_threads
from lab.config import compose_with_options
from lab.rl.task import build_agent


def main(argv: list[str]) -> None:
    options = {"warmup": 600, "steps": 1200}
    cfg = compose_with_options(argv, options, "logger=none")
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    agent = build_agent(cfg, Compute(resolve_device(cfg.device), cfg.precision))
    try:
        agent.learn(options["warmup"])
        start, steps, updates = time.perf_counter(), agent.step, agent.updates
        agent.learn(options["steps"])
        seconds = time.perf_counter() - start
    finally:
        agent.close()
    print(
        f"{cfg.agent.name} on {cfg.env.id}: {(agent.step - steps) / seconds:.1f} env steps/s, "
        f"{(agent.updates - updates) / seconds:.1f} updates/s ({seconds:.1f} s, "
        f"threads={cfg.threads})"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
