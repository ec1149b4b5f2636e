"""CartPole without velocities: the observation is (cart position, pole angle) only.

rl-zoo3's ``CartPoleNoVel-v1``, the standard test of a memory (recurrent) policy: the dynamics
are CartPole-v1's, but the speeds a balancing policy needs must be inferred from successive
observations. A scalar env and Gymnasium's fast vector version, both with the speeds dropped.
"""

import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv, CartPoleVectorEnv
from gymnasium.vector.utils import batch_space

SEEN = [0, 2]  # x and theta of CartPole's (x, x_dot, theta, theta_dot)


def _positions_only(space: spaces.Box) -> spaces.Box:
    return spaces.Box(space.low[SEEN], space.high[SEEN], dtype=np.float32)


class CartPoleNoVelEnv(CartPoleEnv):
    """CartPole-v1 observed through (x, theta)."""

    def __init__(self, render_mode: str | None = None, **kwargs):
        super().__init__(render_mode=render_mode, **kwargs)
        self.observation_space = _positions_only(self.observation_space)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = super().reset(seed=seed, options=options)
        return obs[SEEN], info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs[SEEN], reward, terminated, truncated, info


class CartPoleNoVelVectorEnv(CartPoleVectorEnv):
    """Gymnasium's vectorised CartPole (about 10x the steps/s of N scalar envs), positions only."""

    def __init__(self, num_envs: int = 1, **kwargs):
        super().__init__(num_envs=num_envs, **kwargs)
        self.single_observation_space = _positions_only(self.single_observation_space)
        self.observation_space = batch_space(self.single_observation_space, num_envs)

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return obs[:, SEEN], info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs[:, SEEN], reward, terminated, truncated, info
