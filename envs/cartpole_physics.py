"""CartPole-v1 with other physics: a longer or heavier pole, a heavier cart, a weaker push.

Gymnasium's CartPole takes no physics options (``gym.make("CartPole-v1", length=1.0)`` fails),
so this subclass sets them after CartPole's own constructor, keeping the derived quantities
(total mass, pole mass x half-length) consistent. Observations, actions, rewards, the 500-step
limit and the 475 threshold stay CartPole-v1's, so a policy trained on one runs on the other:
the transfer pair ``env=cartpole`` -> ``env=cartpole_long``. A scalar env and a version of
Gymnasium's fast vector env (what ``lab.rl.env.make_vec_env`` picks), with the same options.
"""

from gymnasium.envs.classic_control.cartpole import CartPoleEnv, CartPoleVectorEnv

from lab.errors import ConfigError

DEFAULTS = {"length": 0.5, "masspole": 0.1, "masscart": 1.0, "force_mag": 10.0}  # CartPole-v1's


def set_physics(
    env: CartPoleEnv | CartPoleVectorEnv,
    length: float,
    masspole: float,
    masscart: float,
    force_mag: float,
) -> None:
    """Set the half-length of the pole (m), its mass and the cart's (kg), and the push (N)."""
    values = {"length": length, "masspole": masspole, "masscart": masscart, "force_mag": force_mag}
    for key, value in values.items():
        if not value > 0:
            raise ConfigError(
                f"env.kwargs.{key}={value}: must be > 0 (CartPole-v1: {DEFAULTS[key]})"
            )
    env.length, env.masspole, env.masscart, env.force_mag = length, masspole, masscart, force_mag
    env.total_mass = masspole + masscart
    env.polemass_length = masspole * length


class CartPolePhysicsEnv(CartPoleEnv):
    """CartPole-v1 with the given pole half-length, masses and force."""

    def __init__(
        self,
        length: float = DEFAULTS["length"],
        masspole: float = DEFAULTS["masspole"],
        masscart: float = DEFAULTS["masscart"],
        force_mag: float = DEFAULTS["force_mag"],
        **kwargs,
    ):
        super().__init__(**kwargs)
        set_physics(self, length, masspole, masscart, force_mag)


class CartPolePhysicsVectorEnv(CartPoleVectorEnv):
    """Gymnasium's vectorised CartPole with the given pole half-length, masses and force."""

    def __init__(
        self,
        num_envs: int = 1,
        length: float = DEFAULTS["length"],
        masspole: float = DEFAULTS["masspole"],
        masscart: float = DEFAULTS["masscart"],
        force_mag: float = DEFAULTS["force_mag"],
        **kwargs,
    ):
        super().__init__(num_envs=num_envs, **kwargs)
        set_physics(self, length, masspole, masscart, force_mag)
