"""Reinforcement learning: environments, evaluation, the lab's agents and SB3 baselines."""
