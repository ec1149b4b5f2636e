"""The RBM's maths on a 3 x 2 machine by hand (lab/gen/energy.py), then the model on the runner:
PCD and CD-k, the greedy stack, resume, and an honest learning test (lab/gen/rbm.py)."""

import itertools
import math

import pytest
import torch

from lab.compute import Compute
from lab.errors import ConfigError
from lab.gen.energy import (
    RBMLayer,
    cd_gradient,
    free_energy,
    gibbs,
    hidden_probs,
    pseudo_log_likelihood,
    visible_probs,
)
from lab.gen.rbm import RBM, binarize
from tests.conftest import assert_one_line_error, lab
from tests.test_gen import TINY_BUDGET, _task
from tests.test_gen_runs import assert_resumes_exactly, one_thread  # noqa: F401 (a fixture)

LN3 = math.log(3.0)
CPU = Compute(torch.device("cpu"))
# W's entries are 0 or ±ln 3, so every σ below is 1/2, 3/4, 1/4 or 9/10.
W = torch.tensor([[LN3, 0.0], [0.0, LN3], [LN3, -LN3]])
B = torch.tensor([0.5, -1.0, 0.0])
C = torch.zeros(2)
DATA = torch.tensor([[1.0, 0.0, 1.0]])  # c + vW = (2 ln 3, -ln 3)
MODEL = torch.tensor([[0.0, 1.0, 0.0]])  # c + vW = (0, ln 3)


def test_free_energy_by_hand():
    # F(v) = -bᵀv - Σ_j log(1 + exp(c_j + vᵀW_j)):
    # F(1,0,1) = -0.5 - log(1 + 9) - log(1 + 1/3);  F(0,1,0) = 1 - log 2 - log 4.
    expected = torch.tensor([-0.5 - math.log(10) - math.log(4 / 3), 1 - math.log(8)])
    assert torch.allclose(free_energy(torch.cat([DATA, MODEL]), W, B, C), expected)


def test_conditionals_by_hand():
    assert torch.allclose(hidden_probs(DATA, W, C), torch.tensor([[0.9, 0.25]]))
    # p(v | h = (1, 1)) = σ(b + W 1) = σ(0.5 + ln 3, -1 + ln 3, 0)
    expected = torch.sigmoid(torch.tensor([[0.5 + LN3, -1 + LN3, 0.0]]))
    assert torch.allclose(visible_probs(torch.ones(1, 2), W, B), expected)


def test_cd_gradient_by_hand():
    # p(h | data) = (9/10, 1/4), p(h | model) = (1/2, 3/4):
    # ∂W = v_d p_dᵀ - v_m p_mᵀ, ∂b = v_d - v_m, ∂c = p_d - p_m.
    gradient = cd_gradient(DATA, MODEL, W, C)
    expected_W = torch.tensor([[0.9, 0.25], [-0.5, -0.75], [0.9, 0.25]])
    assert torch.allclose(gradient.W, expected_W)
    assert torch.allclose(gradient.b, torch.tensor([1.0, -1.0, 1.0]))
    assert torch.allclose(gradient.c, torch.tensor([0.4, -0.5]))


def test_cd_gradient_is_minus_the_free_energy_difference_gradient():
    # log p(v) = -F(v) - log Z and ∂ log Z = -E_model[∂F]: the CD gradient is the gradient of
    # mean F(model) - mean F(data), for any batches.
    torch.manual_seed(0)
    params = [
        t.clone().requires_grad_(True) for t in (torch.randn(5, 4), torch.randn(5), torch.randn(4))
    ]
    data, model = (torch.rand(7, 5) < 0.5).float(), (torch.rand(3, 5) < 0.5).float()
    objective = free_energy(model, *params).mean() - free_energy(data, *params).mean()
    autograd = torch.autograd.grad(objective, params)
    gradient = cd_gradient(data, model, params[0].detach(), params[2].detach())
    for ours, theirs in zip(gradient, autograd, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-6)


def _exact_distribution() -> dict[tuple, float]:
    """p(v) ∝ exp(-F(v)) over all 8 visible states of the 3 x 2 machine."""
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))
    p = torch.softmax(-free_energy(states, W, B, C), dim=0)
    return {tuple(s.tolist()): float(q) for s, q in zip(states, p, strict=True)}


def test_pseudo_log_likelihood_against_the_exact_conditionals():
    p = _exact_distribution()
    v = (1.0, 0.0, 1.0)
    exact = 0.0
    for i in range(3):  # log p(v_i | v_-i) = log p(v) / (p(v) + p(v with bit i flipped))
        flipped = list(v)
        flipped[i] = 1 - flipped[i]
        exact += math.log(p[v] / (p[v] + p[tuple(flipped)]))
    assert float(pseudo_log_likelihood(DATA, W, B, C)) == pytest.approx(exact, rel=1e-5)
    # The stochastic estimate flips one bit and scales it by V: its mean over bits is exact.
    rows = DATA.repeat(3, 1)
    one_bit = pseudo_log_likelihood(rows, W, B, C, units=torch.arange(3))
    assert float(one_bit.mean()) == pytest.approx(exact, rel=1e-5)


def test_block_gibbs_samples_the_machines_distribution():
    torch.manual_seed(0)
    v, _ = gibbs((torch.rand(20_000, 3) < 0.5).float(), W, B, C, steps=30)
    for state, p in _exact_distribution().items():
        frequency = float((v == torch.tensor(state)).all(dim=1).float().mean())
        assert frequency == pytest.approx(p, abs=0.015), state


def test_binarize_turns_each_pixel_on_with_its_intensity():
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0]).reshape(1, 1, 2, 2).repeat(20_000, 1, 1, 1)
    means = binarize(x, torch.Generator().manual_seed(0)).mean(dim=0)
    assert torch.allclose(means, torch.tensor([0.0, 0.5, 0.75, 1.0]), atol=0.015)


def _rbm(**kw) -> RBM:
    torch.manual_seed(0)
    return RBM((1, 4, 4), CPU, **({"total_steps": 10, "layers": [8]} | kw))


def test_pcd_keeps_its_chains_and_cd_k_restarts_them_from_the_data(monkeypatch):
    starts = []
    real_gibbs = RBMLayer.gibbs
    monkeypatch.setattr(
        RBMLayer, "gibbs", lambda s, v, k, g=None: starts.append(v) or real_gibbs(s, v, k, g)
    )
    batch = torch.ones(6, 1, 4, 4)  # all on: binarised to ones
    for persistent in (True, False):
        starts.clear()
        model = _rbm(persistent=persistent, cd_k=3)
        model.update(lambda: batch)
        model.update(lambda: batch)
        assert torch.equal(starts[0], torch.ones(6, 16))
        assert torch.equal(starts[1], torch.ones(6, 16)) != persistent
        assert persistent == (model.chains[0] is not None)


def test_a_dbn_trains_its_layers_in_turn_on_the_states_below():
    model = _rbm(layers=[8, 5], total_steps=4)
    batch = torch.rand(6, 1, 4, 4) * 2 - 1
    before = [layer.W.detach().clone() for layer in model.layers]
    model.update(lambda: batch)
    model.update(lambda: batch)
    assert not torch.equal(model.layers[0].W, before[0]) and torch.equal(
        model.layers[1].W, before[1]
    )
    frozen = model.layers[0].W.detach().clone()
    metrics = model.update(lambda: batch)
    assert float(metrics["train/layer"]) == 1 and not torch.equal(model.layers[1].W, before[1])
    assert torch.equal(model.layers[0].W, frozen)
    assert model.latent(3).shape == (3, 8)  # chains run in the top RBM, over the 8 units below it
    images = model.generate(model.latent(3, torch.Generator().manual_seed(0)))
    assert images.shape == (3, 1, 4, 4) and images.min() >= -1 and images.max() <= 1


def test_the_rate_anneals_to_zero_over_each_layers_share():
    model = _rbm(layers=[8, 5], total_steps=10, lr=0.1)  # 5 updates per RBM
    rates = [model.learning_rate(update) for update in range(10)]
    assert rates == pytest.approx([0.1, 0.08, 0.06, 0.04, 0.02] * 2)
    assert _rbm(anneal=False, lr=0.1).learning_rate(9) == 0.1


def test_generate_is_a_function_of_the_code():
    model = _rbm(sample_steps=20)
    z = model.latent(5, torch.Generator().manual_seed(1))
    assert torch.equal(model.generate(z), model.generate(z))
    assert not torch.equal(model.generate(z[:2]), model.generate(z[2:4]))


@pytest.mark.parametrize(
    ("hyperparameters", "key"),
    [
        ({"layers": []}, "model.layers"),
        ({"layers": [8, 0]}, "model.layers"),
        ({"cd_k": 0}, "model.cd_k"),
        ({"momentum": 1.0}, "model.momentum"),
    ],
)
def test_bad_hyperparameters_name_their_key(hyperparameters, key):
    with pytest.raises(ConfigError, match=key):
        _rbm(**hyperparameters)


@pytest.mark.usefixtures("one_thread")
def test_a_tiny_rbm_resumes_exactly(tmp_path):
    """The weights, momenta and persistent chains come back. One RBM at a constant rate: the
    helper stops a 20-step run and resumes it to 40, which would move an annealed rate's or a
    DBN's layer schedule (both are shares of total_steps)."""
    rbm = ["model=rbm", "model.layers=[16]", "model.sample_steps=20", "model.anneal=false"]
    a = assert_resumes_exactly(tmp_path, *TINY_BUDGET, *rbm, "threads=1")
    assert a["task"]["model"]["updates"] == 40 and a["task"]["model"]["chains"][0] is not None


def test_bad_layers_are_a_one_line_error(tmp_path):
    result = lab(tmp_path, "model=rbm", "model.layers=[256,-1]", *TINY_BUDGET)
    assert_one_line_error(result, "model.layers=")


@pytest.mark.slow
def test_rbm_learns(tmp_path):
    """1,500 PCD updates (seed 0, 500 samples, 200-step chains) take FID from 1,097 untrained
    (grey noise) to 185 and the held-out pseudo-log-likelihood from -178 to -97 nats: about
    110 s on one thread with the machine under load."""
    task = _task("model=rbm", "fid.samples=500", "model.sample_steps=200", "seed=0")
    untrained = task.evaluate(tmp_path)[0]
    task.train_step(1500)
    trained = task.evaluate(tmp_path)[0]
    assert trained["eval/fid"] < untrained["eval/fid"] / 4, (trained, untrained)
    pll = trained["eval/pseudo_log_likelihood"], untrained["eval/pseudo_log_likelihood"]
    assert pll[0] > pll[1] + 50, pll
