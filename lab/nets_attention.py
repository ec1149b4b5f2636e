"""``net=transformer``: causal self-attention over the last ``context`` steps, as in GTrXL.

Parisotto et al. 2019, "Stabilizing Transformers for Reinforcement Learning": each block
normalises its inputs first (pre-layer-norm, the "identity map reordering") and replaces both
residual sums with a GRU-type gate whose bias starts the block near the identity, so that an
untrained agent is close to a Markov (feed-forward) one and learns to use the past.

As in Transformer-XL, each block keeps the last ``context - 1`` inputs it saw (its memory,
without gradients into the past) and a step attends to those and to itself, never to later
steps nor to an earlier episode. Positions enter as a learned bias per head and distance
(0 .. context-1) on the attention logits: the order of the steps is what a velocity is read
from. Deeper blocks see further back, through the memories of the blocks below.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lab.errors import ConfigError
from lab.nets import State, Torso, encoder_for


class GRUGate(nn.Module):
    """g(x, y) = (1 − z) ⊙ x + z ⊙ ĥ, with r = σ(W_r y + U_r x), z = σ(W_z y + U_z x − b_g),
    ĥ = tanh(W_g y + U_g (r ⊙ x)): GTrXL's gated residual. b_g > 0 makes it start near x."""

    def __init__(self, width: int, gate_bias: float):
        super().__init__()
        self.w = nn.Linear(width, 3 * width, bias=False)  # W_r, W_z, W_g on the branch y
        self.u = nn.Linear(width, 2 * width, bias=False)  # U_r, U_z on the stream x
        self.u_g = nn.Linear(width, width, bias=False)
        self.gate_bias = nn.Parameter(torch.full((width,), float(gate_bias)))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w_r, w_z, w_g = self.w(y).chunk(3, dim=-1)
        u_r, u_z = self.u(x).chunk(2, dim=-1)
        r = torch.sigmoid(w_r + u_r)
        z = torch.sigmoid(w_z + u_z - self.gate_bias)
        candidate = torch.tanh(w_g + self.u_g(r * x))
        return (1 - z) * x + z * candidate


class GatedBlock(nn.Module):
    """LayerNorm → multi-head attention → ReLU → gate; LayerNorm → MLP → ReLU → gate."""

    def __init__(self, width: int, heads: int, ff_size: int, gate_bias: float):
        super().__init__()
        self.heads = heads
        self.norm_attention = nn.LayerNorm(width)
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.project = nn.Linear(width, width)
        self.gate_attention = GRUGate(width, gate_bias)
        self.norm_ff = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, ff_size), nn.ReLU(), nn.Linear(ff_size, width))
        self.gate_ff = GRUGate(width, gate_bias)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``x`` (N, T, D) attends to ``[memory, x]`` (N, M + T, D) under the additive ``bias``
        (N, heads, T, M + T), which holds -inf where a step may not look."""
        n, steps, width = x.shape
        normed = self.norm_attention(torch.cat([memory, x], dim=1))
        split = (n, -1, self.heads, width // self.heads)
        q = self.query(normed[:, -steps:]).view(split).transpose(1, 2)
        k, v = (t.reshape(split).transpose(1, 2) for t in self.key_value(normed).chunk(2, -1))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        y = self.project(attended.transpose(1, 2).reshape(n, steps, width))
        x = self.gate_attention(x, F.relu(y))
        return self.gate_ff(x, F.relu(self.ff(self.norm_ff(x))))


class Transformer(Torso):
    """GTrXL over the last ``context`` steps. The state is (valid, memory of each block): which
    of the ``context - 1`` remembered steps belong to the current episode, and what each block
    saw at them."""

    recurrent = True
    windowed = True

    def __init__(
        self,
        obs_shape: Sequence[int],
        width: int = 64,
        heads: int = 4,
        depth: int = 2,
        context: int = 16,
        ff_size: int = 128,
        gate_bias: float = 2.0,
        encoder_sizes: Sequence[int] = (64,),
    ):
        super().__init__()
        if not isinstance(context, int) or context < 1:
            raise ConfigError(
                f"net.context={context}: the steps each one attends over, itself included; "
                "give a positive integer (e.g. 16)"
            )
        check_sizes(width=width, heads=heads, depth=depth, ff_size=ff_size)
        if width % heads:
            raise ConfigError(f"net.width={width}: must be a multiple of net.heads={heads}")
        self.context, self.width = context, width
        self.encoder = encoder_for(obs_shape, encoder_sizes)
        self.embed = nn.Linear(self.encoder.out_dim, width)
        self.blocks = nn.ModuleList(
            GatedBlock(width, heads, ff_size, gate_bias) for _ in range(depth)
        )
        self.distance_bias = nn.Parameter(torch.zeros(heads, context))
        self.norm = nn.LayerNorm(width)
        self.out_dim = width

    def initial_state(self, batch: int, device: torch.device | None = None) -> State:
        memory = self.context - 1
        valid = torch.zeros(batch, memory, device=device)
        return valid, *(torch.zeros(batch, memory, self.width, device=device) for _ in self.blocks)

    def forward(self, obs: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One step for a batch of envs: features, and the state with this step remembered."""
        x = self.embed(self.encoder(obs))[:, None]
        valid, memories = state[0], state[1:]
        ones = torch.ones_like(valid[:, :1])
        segments = torch.zeros_like(ones, dtype=torch.long)
        out, inputs = self._attend(x, memories, valid, segments, ones)
        pairs = zip(memories, inputs, strict=True)
        remembered = tuple(torch.cat([m, i], dim=1)[:, 1:] for m, i in pairs)
        return out[:, 0], (torch.cat([valid, ones], dim=1)[:, 1:], *remembered)

    def unroll(self, obs: torch.Tensor, state: State, keep: torch.Tensor) -> torch.Tensor:
        """Features of a (T, N, ...) sequence from ``state``, in one pass: the same, step by
        step, as ``forward`` with the state zeroed after step t where ``keep[t]`` is False."""
        steps, n = obs.shape[:2]
        x = self.embed(self.encoder(obs.flatten(0, 1))).view(steps, n, -1).transpose(0, 1)
        # Episode number within the rollout: a step after a False in keep starts a new one.
        ends = (~keep.bool()).T.long()
        segments = torch.cat([torch.zeros_like(ends[:, :1]), ends.cumsum(1)[:, :-1]], dim=1)
        valid = torch.ones(n, steps, device=x.device)
        out, _ = self._attend(x, state[1:], state[0], segments, valid)
        return out.transpose(0, 1)

    def window(self, obs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Features of the last step of each (N, K, ...) window of observations, from an empty
        memory; ``valid`` (N, K) is False on the zero padding before an episode's start."""
        n, steps = obs.shape[:2]
        x = self.embed(self.encoder(obs.flatten(0, 1))).view(n, steps, -1)
        empty = tuple(x.new_zeros(n, 0, self.width) for _ in self.blocks)
        segments = torch.zeros(n, steps, dtype=torch.long, device=x.device)
        out, _ = self._attend(x, empty, x.new_zeros(n, 0), segments, valid.to(x.dtype))
        return out[:, -1]

    def _attend(
        self,
        x: torch.Tensor,
        memories: Sequence[torch.Tensor],
        memory_valid: torch.Tensor,
        segments: torch.Tensor,
        valid: torch.Tensor,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The blocks over T new steps ``x`` (N, T, D) after M remembered ones.

        A step sees a key if it is no later, fewer than ``context`` steps back, valid, and in
        the same episode (``segments``; memories are in the first one). Returns the output
        and each block's inputs at the new steps (what it will remember).
        """
        n, steps = x.shape[:2]
        remembered = memory_valid.shape[1]
        key_valid = torch.cat([memory_valid, valid], dim=1).bool()
        key_segment = torch.cat([segments.new_zeros(n, remembered), segments], dim=1)
        query_pos = torch.arange(steps, device=x.device) + remembered
        distance = query_pos[:, None] - torch.arange(remembered + steps, device=x.device)
        in_reach = (distance >= 0) & (distance < self.context)
        sees = in_reach & key_valid[:, None, :] & (key_segment[:, None, :] == segments[..., None])
        sees |= distance == 0  # every step sees itself, padding too, so no row is all -inf
        bias = self.distance_bias[:, distance.clamp(0, self.context - 1)]  # (heads, T, M + T)
        bias = bias.masked_fill(~sees[:, None], float("-inf"))
        inputs = []
        for block, memory in zip(self.blocks, memories, strict=True):
            inputs.append(x)
            x = block(x, memory, bias)
        return self.norm(x), inputs


def check_sizes(**sizes: int) -> None:
    """Each ``net.<key>`` must be a positive integer; the error says which."""
    for key, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"net.{key}={value}: must be a positive integer")
