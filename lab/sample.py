"""Samples from a trained generative run: ``python -m lab.sample <run dir> n=64``.

Loads the run's config and ``checkpoints/best.pt`` (lowest FID; ``checkpoint=last`` for the
final weights) and writes ``samples/samples_<n>_seed<seed>.png`` (a grid) and ``.npz``
(``images``: uint8 ``[n, C, H, W]``, ``z``: the latents) into the run (or ``out=DIR``).

Options: ``n=64``, ``seed=0``, ``checkpoint=best|last``, ``out=DIR``, ``device=auto``.
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

USAGE = "usage: python -m lab.sample <run dir> [n=64] [seed=0] [checkpoint=best]"
OPTIONS = {
    "n": positive_int,
    "seed": non_negative_int,
    "checkpoint": checkpoint_name,
    "out": str,
    "device": str,
}
DEFAULTS = {"n": 64, "seed": 0, "checkpoint": "best", "out": None, "device": "auto"}


def parse(argv: list[str]) -> tuple[Path, dict]:
    run_dir, given = read_command(argv, OPTIONS, USAGE)
    return run_dir, DEFAULTS | given


def sample(run_dir: Path, n: int, seed: int, which: str, out: Path, device: str) -> Path:
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
        images = torch.cat([model.generate(chunk) for chunk in z.split(500)])
    stem = out / f"samples_{n}_seed{seed}"
    save_grid(images[:256], stem.with_suffix(".png"))
    np.savez_compressed(
        stem.with_suffix(".npz"), images=to_uint8(images.cpu()).numpy(), z=z.cpu().numpy()
    )
    return stem


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
        )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {stem}.png (grid) and {stem}.npz ({options['n']} samples)")


if __name__ == "__main__":
    main()
