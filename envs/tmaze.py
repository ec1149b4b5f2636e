"""T-maze (Bakker 2002): a cue at the start says which way to turn at the end of a corridor.

The observation is three flags: (cue says up, cue says down, at the junction). The cue is shown
on the first step only and the corridor looks the same everywhere, so the choice at the junction
is a memory task over ``length`` steps: a policy that sees only the current observation is
right half the time. The agent walks one cell a step whatever it does in the corridor (its
actions count only at the junction), so every episode lasts ``length + 1`` steps and the memory
span is exact. Reward: +1 for the right turn, 0 for the wrong one and for every other step.

Bakker's maze also makes the agent choose to walk, with a penalty per step to hurry it; here
walking is automatic, so a step penalty would only shift every return by the same constant and
there is none.
"""

import gymnasium as gym
import numpy as np
from gymnasium import spaces

UP, DOWN = 0, 1


class TMazeEnv(gym.Env):
    """A corridor of ``length`` steps from the cue to the junction, then one choice: up or down."""

    metadata = {"render_modes": []}  # noqa: RUF012 (Gymnasium API)

    def __init__(self, length: int = 10, render_mode: str | None = None):
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length={length}: must be a positive integer (env.length)")
        self.length, self.render_mode = length, render_mode
        self.observation_space = spaces.Box(0.0, 1.0, (3,), np.float32)
        self.action_space = spaces.Discrete(2)
        self._goal = UP
        self._position = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._goal = int(self.np_random.integers(2))
        self._position = 0
        return self._observation(), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        if self._position == self.length:  # at the junction: the choice ends the episode
            reward = 1.0 if int(action) == self._goal else 0.0
            return self._observation(), reward, True, False, {"goal": self._goal}
        self._position += 1
        return self._observation(), 0.0, False, False, {}

    def _observation(self) -> np.ndarray:
        obs = np.zeros(3, np.float32)
        if self._position == 0:
            obs[self._goal] = 1.0
        if self._position == self.length:
            obs[2] = 1.0
        return obs
