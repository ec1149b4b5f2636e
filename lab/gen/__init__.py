"""Image generative models (GANs, VAEs) on the same runner as the RL agents."""
