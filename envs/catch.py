"""Catch: a ball falls down a grid and a paddle on the bottom row must be under it when it lands.

The pixel task from bsuite (Osband et al. 2020), drawn as an image so that a convolutional agent
has something real to learn: +1 for a catch, -1 for a miss, one ball per episode.
"""

import gymnasium as gym
import numpy as np
from gymnasium import spaces

LEFT, STAY, RIGHT = 0, 1, 2


class CatchEnv(gym.Env):
    """A ``rows`` x ``cols`` grid drawn at ``scale`` pixels a cell as a (1, H, W) uint8 image."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012 (Gymnasium API)

    def __init__(
        self, rows: int = 10, cols: int = 5, scale: int = 8, render_mode: str | None = None
    ):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}: Catch renders only 'rgb_array'")
        self.rows, self.cols, self.scale = rows, cols, scale
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, (1, rows * scale, cols * scale), np.uint8)
        self.action_space = spaces.Discrete(3)
        self._ball = (0, 0)
        self._paddle = cols // 2

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._ball = (0, int(self.np_random.integers(self.cols)))
        self._paddle = self.cols // 2
        return self._observation(), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        self._paddle = int(np.clip(self._paddle + int(action) - 1, 0, self.cols - 1))
        row, col = self._ball
        self._ball = (row + 1, col)
        terminated = self._ball[0] == self.rows - 1
        reward = 0.0
        if terminated:
            reward = 1.0 if col == self._paddle else -1.0
        return self._observation(), reward, terminated, False, {}

    def _grid(self) -> np.ndarray:
        grid = np.zeros((self.rows, self.cols), np.uint8)
        grid[self._ball] = 255
        grid[self.rows - 1, self._paddle] = 255
        return grid

    def _observation(self) -> np.ndarray:
        image = np.kron(self._grid(), np.ones((self.scale, self.scale), np.uint8))
        return image[None]

    def render(self) -> np.ndarray:
        return np.repeat(self._observation()[0][..., None], 3, axis=2)
