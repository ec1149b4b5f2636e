"""Recurrent torsos (``net=lstm``, ``net=gru``): an encoder, then a recurrent cell.

Both keep the ``Torso`` recurrent interface of lab/nets.py: ``initial_state``, ``forward(obs,
state) -> (features, state)`` and ``unroll(obs, state, keep)``. Agents carry the state across
rollouts and zero it at episode ends (``lab.nets.mask_state``).
"""

from collections.abc import Sequence

import torch
from torch import nn

from lab.errors import ConfigError
from lab.nets import State, Torso, encoder_for, mask_state


class RecurrentCore(Torso):
    """An encoder (MLP, or the Nature CNN for images), a recurrent cell (``CELL``) over its
    features, and a LayerNorm on what the cell hands the heads (not on the state it carries):
    CartPole without velocities gives inputs of ~0.05, and an un-normalised cell's features
    stayed too small for A2C's policy gradient to find the velocities in 150k steps."""

    recurrent = True
    CELL: type[nn.Module]

    def __init__(
        self, obs_shape: Sequence[int], hidden_size: int = 128, encoder_sizes: Sequence[int] = (64,)
    ):
        super().__init__()
        if hidden_size < 1:
            raise ConfigError(f"net.hidden_size={hidden_size}: must be a positive width")
        self.encoder = encoder_for(obs_shape, encoder_sizes)
        self.cell = self.CELL(self.encoder.out_dim, hidden_size)
        self.norm = nn.LayerNorm(hidden_size)
        self.out_dim = hidden_size

    def step(self, encoded: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One step of the cell on encoded observations: (features, next state)."""
        raise NotImplementedError

    def initial_state(self, batch: int, device: torch.device | None = None) -> State:
        raise NotImplementedError

    def forward(self, obs: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h, state = self.step(self.encoder(obs), state)
        return self.norm(h), state

    def unroll(self, obs: torch.Tensor, state: State, keep: torch.Tensor) -> torch.Tensor:
        """Features of a (T, N, ...) sequence from ``state``, zeroing it after step t where
        ``keep[t]`` is False. The encoder sees all T·N observations in one batch."""
        steps, n = obs.shape[:2]
        encoded = self.encoder(obs.flatten(0, 1)).view(steps, n, -1)
        features = []
        for t in range(steps):
            h, state = self.step(encoded[t], state)
            features.append(h)
            state = mask_state(state, keep[t])
        return self.norm(torch.stack(features))


class LSTM(RecurrentCore):
    """An LSTM cell (Hochreiter & Schmidhuber 1997); its state is (h, c).

    ``forget_bias`` is added to the forget gate's bias at init (Gers et al. 2000; Jozefowicz et
    al. 2015 recommend 1; conf/net/lstm.yaml says what we measured): with PyTorch's init (0)
    the gate starts near 0.5 and a cue fades by half every step, so a gradient from 20 steps
    later is ~1e-6 of what it was.
    """

    CELL = nn.LSTMCell

    def __init__(
        self,
        obs_shape: Sequence[int],
        hidden_size: int = 128,
        encoder_sizes: Sequence[int] = (64,),
        forget_bias: float = 0.0,
    ):
        super().__init__(obs_shape, hidden_size, encoder_sizes)
        with torch.no_grad():  # gates are ordered (input, forget, cell, output)
            self.cell.bias_hh[hidden_size : 2 * hidden_size] += forget_bias

    def initial_state(self, batch: int, device: torch.device | None = None) -> State:
        zeros = torch.zeros(batch, self.out_dim, device=device)
        return zeros, zeros.clone()

    def step(self, encoded: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h, c = self.cell(encoded, state)
        return h, (h, c)


class GRU(RecurrentCore):
    """A GRU cell (Cho et al. 2014): an LSTM's memory with one state tensor and 3/4 the weights."""

    CELL = nn.GRUCell

    def initial_state(self, batch: int, device: torch.device | None = None) -> State:
        return (torch.zeros(batch, self.out_dim, device=device),)

    def step(self, encoded: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h = self.cell(encoded, state[0])
        return h, (h,)
