"""lab: deep reinforcement learning and generative models behind one Hydra CLI and one runner."""

__version__ = "0.1.0"
