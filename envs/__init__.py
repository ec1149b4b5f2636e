"""The lab's own Gymnasium environments, registered under the ``lab/`` namespace on import."""

import gymnasium as gym

if "lab/Catch-v0" not in gym.registry:
    gym.register(
        id="lab/Catch-v0",
        entry_point="envs.catch:CatchEnv",
        reward_threshold=0.9,
    )
