"""The lab's own Gymnasium environments, registered under the ``lab/`` namespace on import."""

import gymnasium as gym

REGISTERED = {
    "lab/Catch-v0": {"entry_point": "envs.catch:CatchEnv", "reward_threshold": 0.9},
    # rl-zoo3's CartPoleNoVel-v1: CartPole-v1's limits and threshold, velocities hidden.
    "lab/CartPoleNoVel-v1": {
        "entry_point": "envs.cartpole_novel:CartPoleNoVelEnv",
        "vector_entry_point": "envs.cartpole_novel:CartPoleNoVelVectorEnv",
        "max_episode_steps": 500,
        "reward_threshold": 475.0,
    },
    # CartPole-v1 with a longer/heavier pole (env.kwargs: length, masspole, masscart, force_mag).
    "lab/CartPolePhysics-v1": {
        "entry_point": "envs.cartpole_physics:CartPolePhysicsEnv",
        "vector_entry_point": "envs.cartpole_physics:CartPolePhysicsVectorEnv",
        "max_episode_steps": 500,
        "reward_threshold": 475.0,
    },
    # Solved: the right turn in (nearly) every episode; a memoryless policy scores about 0.5.
    "lab/TMaze-v0": {"entry_point": "envs.tmaze:TMazeEnv", "reward_threshold": 0.95},
}

for env_id, spec in REGISTERED.items():
    if env_id not in gym.registry:
        gym.register(id=env_id, **spec)
