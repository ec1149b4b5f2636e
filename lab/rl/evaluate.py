"""Deterministic evaluation episodes on their own environments, and episode videos."""

import os
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from lab.rl.agent import Policy
from lab.rl.env import make_env, make_vec_env


class Evaluator:
    """Runs ``episodes`` episodes in parallel from envs reset with one fixed seed.

    The seeds are the same at every evaluation so that successive scores are comparable.
    """

    def __init__(self, env_cfg: DictConfig, episodes: int, seed: int):
        self.env_cfg, self.episodes, self.seed = env_cfg, episodes, seed
        self.envs = make_vec_env(env_cfg, episodes)

    def run(self, policy: Policy) -> dict[str, float]:
        obs, _ = self.envs.reset(seed=self.seed)
        returns = np.zeros(self.episodes)
        lengths = np.zeros(self.episodes, dtype=np.int64)
        running = np.ones(self.episodes, dtype=bool)
        while running.any():
            obs, reward, terminated, truncated, _ = self.envs.step(policy(obs))
            returns += reward * running
            lengths += running
            running &= ~(terminated | truncated)
        return {
            "eval/return_mean": float(returns.mean()),
            "eval/return_std": float(returns.std()),
            "eval/length_mean": float(lengths.mean()),
        }

    def record_video(self, policy: Policy, path: Path, max_frames: int = 2000) -> Path:
        """One greedy episode rendered to MP4 (imageio-ffmpeg) or GIF (Pillow); returns the file."""
        # Off-screen rendering needs neither a display nor sound (pygame would complain).
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
        env = make_env(self.env_cfg, render_mode="rgb_array")
        try:
            obs, _ = env.reset(seed=self.seed)
            frames = [env.render()]
            done = False
            while not done and len(frames) < max_frames:
                obs, _, terminated, truncated, _ = env.step(policy(obs[None])[0])
                frames.append(env.render())
                done = terminated or truncated
        finally:
            env.close()
        fps = env.metadata.get("render_fps") or 30
        return write_video(frames, path, fps)

    def close(self) -> None:
        self.envs.close()


def write_video(frames: list[np.ndarray], path: Path, fps: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401

        path = path.with_suffix(".mp4")
        imageio.mimwrite(path, frames, fps=fps, macro_block_size=1)
    except ImportError:
        from PIL import Image

        path = path.with_suffix(".gif")
        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=1000 / fps, loop=0)
    return path
