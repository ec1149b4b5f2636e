"""How long one FID evaluation takes: ``python -m lab.gen.bench [n=10000] [repeats=5] [k=v ...]``.

Times what an evaluation of the default ``model=dcgan dataset=digits`` does, for ``n``
generated images: generate them, extract their domain-classifier features, compute FID and KID
against the reference statistics. Extra ``key=value`` arguments are config overrides (e.g.
``device=cuda`` or ``model=vae``). Prints each repeat and the median.
"""

import statistics
import sys
import time

import torch

from lab.compute import Compute, resolve_device, set_threads
from lab.config import compose_with_options


def main(argv: list[str]) -> None:
    options = {"n": 10000, "repeats": 5}
    cfg = compose_with_options(argv, options, "model=dcgan")
    from lab.gen.task import GenTask

    set_threads(cfg.threads)
    task = GenTask(cfg, Compute(resolve_device(cfg.device), cfg.precision))
    model, n = task.model, options["n"]
    model.train(False)
    seconds = []
    for _ in range(options["repeats"] + 1):  # the first is a warm-up
        start = time.perf_counter()
        with torch.inference_mode():
            z = model.latent(n, torch.Generator().manual_seed(0))
            metrics = task.scorer.score(lambda i, k, z=z: model.generate(z[i : i + k]), n)
        if task.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        print(f"{n} samples: {seconds[-1]:.3f} s  (FID {metrics['eval/fid']:.2f})")
    print(
        f"median of {options['repeats']}: {statistics.median(seconds[1:]):.3f} s on {task.device}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
