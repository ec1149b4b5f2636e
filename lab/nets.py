"""Network torsos selected by the ``net`` config group; heads belong to the algorithms."""

from collections.abc import Sequence

import torch
from torch import nn

from lab.errors import ConfigError

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU}


State = tuple[torch.Tensor, ...]  # a recurrent torso's state: tensors, each batch-first


class Torso(nn.Module):
    """Observations -> ``out_dim`` features.

    A ``recurrent`` torso also takes and returns a ``State`` (``forward(obs, state)``) and has
    ``initial_state(batch, device)`` and ``unroll(obs, state, keep)`` (lab/nets_recurrent.py,
    lab/nets_attention.py); agents carry the state and zero it with ``mask_state``. A
    ``windowed`` torso also reads a window of recent observations at once (``window``), which
    is how an agent that replays single steps (DQN) can use it.
    """

    out_dim: int
    recurrent = False
    windowed = False


def mask_state(state: State, keep: torch.Tensor) -> State:
    """Zero the rows of every tensor in ``state`` where ``keep`` is False (a new episode)."""
    return tuple(s * keep.to(s.dtype).view(-1, *[1] * (s.dim() - 1)) for s in state)


def encoder_for(obs_shape: Sequence[int], encoder_sizes: Sequence[int]) -> Torso:
    """What a memory torso reads observations with: the Nature CNN for images, else an MLP."""
    if len(obs_shape) == 3:
        return NatureCNN(obs_shape)
    return MLP(obs_shape, encoder_sizes)


class MLP(Torso):
    """Fully connected torso over flat (or flattened) observations.

    ``layer_norm`` normalises each hidden layer's pre-activations (Ba et al. 2016), which
    Gallici et al. 2024 ("Simplifying Deep Temporal Difference Learning") show steadies
    temporal-difference learning; DQN's CartPole settings take it (conf/tuned/dqn_cartpole.yaml).
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "relu",
        layer_norm: bool = False,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"net.activation={activation}: use one of {', '.join(ACTIVATIONS)}")
        if not hidden_sizes or any(h < 1 for h in hidden_sizes):
            raise ConfigError(f"net.hidden_sizes={list(hidden_sizes)}: give positive layer widths")
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(torch.tensor(obs_shape).prod())
        for size in hidden_sizes:
            norm = [nn.LayerNorm(size)] if layer_norm else []
            layers += [nn.Linear(width, size), *norm, ACTIVATIONS[activation]()]
            width = size
        self.body = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.body(obs.float())


class NatureCNN(Torso):
    """The DQN Nature paper's convolutional torso (Mnih et al. 2015) over (C, H, W) images."""

    MIN_SIDE = 36  # three valid convolutions (8/4, 4/2, 3/1) need at least 36 pixels a side

    def __init__(self, obs_shape: Sequence[int], features: int = 512):
        super().__init__()
        if len(obs_shape) != 3 or min(obs_shape[1:]) < self.MIN_SIDE:
            raise ConfigError(
                f"net=nature_cnn needs image observations (C, H, W) at least {self.MIN_SIDE} "
                f"pixels a side, but this env gives shape {tuple(obs_shape)}; use net=mlp"
            )
        channels = obs_shape[0]
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, *obs_shape)).shape[1]
        self.fc = nn.Sequential(nn.Linear(flat, features), nn.ReLU())
        self.out_dim = features

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # Pixels arrive as uint8 to keep the replay buffer small; scale on the device.
        return self.fc(self.convs(obs.float() / 255.0))
