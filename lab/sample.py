"""Samples from a trained generative run: ``python -m lab.sample <run dir> n=64``.

Loads the run's config and ``checkpoints/best.pt`` (lowest FID; ``checkpoint=last`` for the
final weights) and writes ``samples/samples_<n>_seed<seed>.png`` (a grid) and ``.npz``
(``images``: uint8 ``[n, C, H, W]``, ``z``: the latents) into the run (or ``out=DIR``).

Options: ``n=64``, ``seed=0``, ``checkpoint=best|last``, ``out=DIR``, ``device=auto``, and
``truncation=ψ`` in (0, 1] for a model with a mapping network (stylegan): each code's style is
pulled towards the mean style, ``samples_<n>_seed<seed>_psi<ψ>.png``; other models refuse it.
"""

import sys
from pathlib import Path

import numpy as np
import torch

from lab.compute import Compute, resolve_device
from lab.errors import ConfigError
from lab.eval import (
    checkpoint_name,
    non_negative_int,
    positive_int,
    read_command,
    run_checkpoint,
    run_config,
)
from lab.gen.data import to_uint8
from lab.gen.images import save_grid
from lab.gen.task import build_model

USAGE = "usage: python -m lab.sample <run dir> [n=64] [seed=0] [checkpoint=best] [truncation=ψ]"


def fraction(text: str) -> float:
    """An option's parser: ψ in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError("must be a number in (0, 1]") from None
    if not 0 < value <= 1:
        raise ValueError("must be in (0, 1]")
    return value


OPTIONS = {
    "n": positive_int,
    "seed": non_negative_int,
    "checkpoint": checkpoint_name,
    "out": str,
    "device": str,
    "truncation": fraction,
}
DEFAULTS = {
    "n": 64,
    "seed": 0,
    "checkpoint": "best",
    "out": None,
    "device": "auto",
    "truncation": None,
}


def parse(argv: list[str]) -> tuple[Path, dict]:
    run_dir, given = read_command(argv, OPTIONS, USAGE)
    return run_dir, DEFAULTS | given


def sample(
    run_dir: Path,
    n: int,
    seed: int,
    which: str,
    out: Path,
    device: str,
    truncation: float | None = None,
) -> Path:
    cfg = run_config(run_dir)
    if cfg.get("model") is None:
        raise ConfigError(f"{run_dir}: an RL run ({cfg.agent.name}); samples need a model= run")
    state = run_checkpoint(run_dir, which)[0]["task"]
    compute = Compute(resolve_device(device))
    model = build_model(cfg.model, tuple(state["shape"]), compute)
    model.load_state_dict(state["model"])
    model.train(False)
    with torch.inference_mode():
        z = model.latent(n, torch.Generator().manual_seed(seed))
        images = torch.cat([_draw(model, chunk, truncation) for chunk in z.split(500)])
    name = f"samples_{n}_seed{seed}" + ("" if truncation is None else f"_psi{truncation:g}")
    stem = out / name  # suffixes by hand: with_suffix would cut a ψ of 0.7 at its dot
    save_grid(images[:256], Path(f"{stem}.png"))
    np.savez_compressed(f"{stem}.npz", images=to_uint8(images.cpu()).numpy(), z=z.cpu().numpy())
    return stem


def _draw(model, z: torch.Tensor, truncation: float | None) -> torch.Tensor:
    if truncation is None:
        return model.generate(z)
    return model.generate_truncated(z, truncation)  # a model without a mapping network refuses


def main(argv: list[str] | None = None) -> None:
    try:
        run_dir, options = parse(sys.argv[1:] if argv is None else argv)
        out = Path(options["out"]) if options["out"] else run_dir / "samples"
        stem = sample(
            run_dir,
            options["n"],
            options["seed"],
            options["checkpoint"],
            out,
            options["device"],
            options["truncation"],
        )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {stem}.png (grid) and {stem}.npz ({options['n']} samples)")


if __name__ == "__main__":
    main()
