"""CUDA-only checks (skipped without a GPU): where tensors live, how they are laid out and cast.

A run that merely finishes on a GPU proves little; these look at memory formats, autocast
dtypes and the fp16 grad scaler, which silently fall back to slow or wrong paths when broken.
"""

import pytest
import torch

from lab.compute import Compute
from lab.rl.task import RLTask
from tests.conftest import compose_config

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def _dqn(precision: str) -> RLTask:
    cfg = compose_config(
        "agent.learning_starts=64", "agent.batch_size=32", "eval.episodes=2", "device=cuda"
    )
    return RLTask(cfg, Compute(CUDA, precision))


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_dqn_learns_on_the_gpu_under_the_requested_autocast(precision, dtype):
    task = _dqn(precision)
    agent = task.agent
    try:
        assert all(p.device.type == "cuda" for p in agent.q.parameters())
        task.train_step(256)
        assert agent.updates > 0
        batch = agent.buffer.sample(8, CUDA)
        assert batch.obs.device.type == "cuda" and batch.actions.device.type == "cuda"
        with agent.compute.autocast():
            assert agent.q(batch.obs).dtype == dtype
        loss, *_ = agent.loss(batch)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)  # the loss is taken in fp32
        metrics, _ = task.evaluate(media_dir=None)
        assert metrics["eval/return_mean"] > 0
    finally:
        task.close()


def test_fp16_scales_the_loss_and_bf16_does_not():
    fp16, bf16 = Compute(CUDA, "fp16"), Compute(CUDA, "bf16")
    assert fp16.scaler.is_enabled() and not bf16.scaler.is_enabled()
    net = torch.nn.Linear(4, 1).to(CUDA)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    before = net.weight.detach().clone()
    with fp16.autocast():
        out = net(torch.randn(16, 4, device=CUDA))
    assert out.dtype == torch.float16
    fp16.backward_step(out.float().square().mean(), optimizer, max_grad_norm=1.0)
    assert not torch.equal(before, net.weight)  # unscaled, clipped, applied
    assert fp16.scaler.get_scale() > 0


def test_a2c_keeps_its_recurrent_state_on_the_gpu():
    cfg = compose_config("agent=a2c", "net=lstm", "eval.episodes=2", "device=cuda")
    task = RLTask(cfg, Compute(CUDA))
    try:
        task.train_step(200)
        h, c = task.agent.collector.state
        assert h.device.type == "cuda" and c.device.type == "cuda"
    finally:
        task.close()
