"""How the Ray backend (lab/rl/impala_ray.py) queues unrolls, on an in-process stand-in for Ray.

A real local Ray takes seconds to start and hides the order of calls; the stand-in runs each
actor call when its result is asked for, in the order the calls were made, which is what the
queueing needs. The real Ray runs in tests/test_impala.py.
"""

from types import SimpleNamespace

import pytest
import torch

from lab.rl import impala_ray
from lab.rl.impala_ray import RayActors
from tests.test_impala import _impala


class _Ref:
    """An actor call's result, computed when first asked for."""

    def __init__(self, call):
        self.call, self.done, self.value = call, False, None

    def result(self):
        if not self.done:
            self.value, self.done = self.call(), True
        return self.value


class _Handle:
    def __init__(self, fake, cls, args):
        self.fake, self.instance = fake, cls(*args)

    def __getattr__(self, name: str):
        method = getattr(self.instance, name)

        def remote(*args):
            if name == "unroll":
                self.fake.unrolls.append(args[0] is not None)  # were weights sent with it
            return _Ref(lambda: method(*args))

        return SimpleNamespace(remote=remote)


class FakeRay:
    """The few calls of Ray's API that ``RayActors`` makes."""

    exceptions = SimpleNamespace(RayError=RuntimeError)

    def __init__(self):
        self.unrolls: list[bool] = []  # one per unroll call: whether it carried weights
        self.running = False

    def init(self, **_):
        self.running = True

    def is_initialized(self) -> bool:
        return self.running

    def shutdown(self):
        self.running = False

    def remote(self, **_):
        def wrap(cls):
            start = SimpleNamespace(remote=lambda *args: _Handle(self, cls, args))
            return SimpleNamespace(options=lambda **_: start)

        return wrap

    def put(self, value):
        return value  # the actor gets the object itself, as Ray resolves a top-level ref

    def get(self, refs):
        return [r.result() for r in refs] if isinstance(refs, list) else refs.result()

    def wait(self, refs, num_returns, timeout):
        return refs[:num_returns], refs[num_returns:]  # first made, first done

    def kill(self, handle, no_restart):
        pass


@pytest.fixture
def fake_ray(monkeypatch):
    fake = FakeRay()
    monkeypatch.setattr(impala_ray, "import_ray", lambda: fake)
    threads = torch.get_num_threads()  # a stand-in actor sets this process's to 1
    yield fake
    torch.set_num_threads(threads)


def test_ray_actors_keep_their_unrolls_queued_across_grants(fake_ray):
    """The learner's grants end at every log row; the actors' queues must not drain there."""
    agent = _impala("agent.backend=ray", "agent.actors=2", "agent.ray.unrolls_in_flight=2")
    actors = agent.actors
    assert isinstance(actors, RayActors)
    one = actors.spec.credits

    def taken() -> int:
        return len(fake_ray.unrolls) - len(actors.pending)

    agent.learn(one)
    assert taken() == 1  # one trajectory taken ...
    assert len(actors.pending) == 2 * 2  # ... and every actor still has two queued
    agent.learn(3 * one)  # taken from the queues: each taken unroll queues the next
    assert taken() == 4 and len(actors.pending) == 2 * 2
    assert 0 < agent.step <= 4 * one  # transitions: autoreset steps are none
    agent.close()
    assert not fake_ray.running


def test_ray_actors_take_nothing_once_stop_is_asked(fake_ray):
    agent = _impala("agent.backend=ray", "agent.actors=2")
    agent.learn(10 * agent.actors.spec.credits, stop=lambda: True)
    assert agent.step == 0
    agent.close()


def test_ray_actors_get_the_weights_only_when_newer_than_their_own(fake_ray):
    agent = _impala("agent.backend=ray", "agent.actors=1", "agent.batch_size=1")
    actors = agent.actors
    assert all(type(w).__module__ == "numpy" for w in actors.weights.values())  # no torch.save
    agent.learn(actors.spec.credits)  # takes unroll 1, queues 3, updates: version 1
    agent.learn(actors.spec.credits)  # takes unroll 2, queues 4 with version 1
    assert fake_ray.unrolls == [True, False, False, True]
    assert actors.handles[0].instance.actor.version == 0  # unroll 4 has not run yet
    fake_ray.get(list(actors.pending))  # run the queued unrolls
    assert actors.handles[0].instance.actor.version == 1
    agent.close()
