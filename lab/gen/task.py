"""A generative model on an image data set, as the runner sees it: train, score, save, load."""

import inspect
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from lab.compute import Compute
from lab.config import check_keywords, instantiate
from lab.gen.data import Batches, ImageData, to_float, upload
from lab.gen.fid import FIDScorer, build_extractor
from lab.gen.images import save_grid
from lab.gen.models import GenerativeModel
from lab.stop import StopCheck, never

EVAL_SEED_OFFSET = 1_000_000  # the fixed latents of evaluations never share training's seed
GRID = 64  # images in each sample grid
RUN_KEYS = ("_target_", "name", "total_steps", "batch_size")  # the task's, not the model's


def build_model(
    model_cfg: DictConfig, shape: tuple[int, int, int], compute: Compute
) -> GenerativeModel:
    """The model a ``model`` config names, for images of ``shape``."""
    # By hand rather than instantiate, which would turn `compute` into a config node.
    model_cls = hydra.utils.get_class(model_cfg._target_)
    hyperparameters = {k: v for k, v in model_cfg.items() if k not in RUN_KEYS}
    if "total_steps" in inspect.signature(model_cls).parameters:  # a schedule over the run
        hyperparameters["total_steps"] = model_cfg.total_steps
    check_keywords(model_cls, "model", hyperparameters, supplied=("shape", "compute"))
    return model_cls(shape=shape, compute=compute, **hyperparameters)


class GenTask:
    """Trains ``model`` on ``dataset``; each evaluation scores FID/KID and writes image grids."""

    family = "generative"
    higher_is_better = False  # for the threshold and best.pt: lower FID is better
    step_unit = "updates"
    threshold_metric = "eval/fid"

    def __init__(self, cfg: DictConfig, compute: Compute):
        data: ImageData = instantiate(cfg.dataset)
        self.algo, self.name = cfg.model.name, data.name
        self.total_steps = int(cfg.model.total_steps)
        self.shape = data.shape
        self.model = build_model(cfg.model, data.shape, compute)
        self.headline_metric = self.model.headline_metric
        self.batches = Batches(
            data.train, cfg.model.batch_size, compute.device, cfg.seed, cfg.model.channels_last
        )
        self.device = compute.device
        real = data.all_images()
        FIDScorer.check(cfg.fid.samples, len(real), cfg.fid.kid_subset_size)
        extractor, self.extractor_info = build_extractor(cfg.fid, data, compute.device)
        self.scorer = FIDScorer(
            extractor,
            real,
            cfg.fid.samples,
            cfg.fid.kid_subsets,
            cfg.fid.kid_subset_size,
            compute.device,
        )
        self.test = to_float(upload(data.test, compute.device))
        self.eval_seed = cfg.seed + EVAL_SEED_OFFSET
        self.threshold = cfg.fid.threshold
        self.step = 0
        self.images = 0  # real images consumed, for perf/images_per_s

    def train_step(self, budget: int, stop: StopCheck = never) -> dict:
        self.model.train(True)
        totals: dict[str, torch.Tensor] = {}
        counting = _CountingBatches(self.batches)
        updates = 0
        while updates < max(budget, 1):
            for key, value in self.model.update(counting).items():
                totals[key] = totals.get(key, 0) + value
            self.step += 1
            updates += 1
            if stop():
                break
        self.images += counting.images
        # One device sync per call, not one per update.
        metrics = {key: value.item() / updates for key, value in totals.items()}
        return metrics | self.counters()

    def counters(self) -> dict[str, int]:
        """Cumulative counts; the runner logs them with their rate (perf/images_per_s)."""
        return {"counter/images": self.images}

    def evaluate(self, media_dir: Path) -> tuple[dict[str, float], dict[str, Path]]:
        model = self.model
        model.train(False)
        with torch.inference_mode():
            model.fit_prior(to_float(self.batches.images))
            z = model.latent(self.scorer.samples, torch.Generator().manual_seed(self.eval_seed))
            metrics = self.scorer.score(lambda i, n: model.generate(z[i : i + n]))
            metrics |= self.scorer.floor | self.extractor_info
            media = {
                "eval/samples": save_grid(model.generate(z[:GRID]), self._png(media_dir, "samples"))
            }
            metrics |= model.held_out(self.test)
            for kind, (images, per_row) in model.figures(self.test).items():
                media[f"eval/{kind}"] = save_grid(images, self._png(media_dir, kind), per_row)
        model.train(True)
        return metrics, media

    def _png(self, media_dir: Path, kind: str) -> Path:
        return media_dir / f"{kind}_{self.step:09d}.png"

    def state_dict(self, resumable: bool) -> dict:
        """All of it either way: a generative model's state is small, so best.pt resumes too."""
        return {
            "model": self.model.state_dict(),
            "batches": self.batches.state_dict(),
            "step": self.step,
            "images": self.images,
            "shape": list(self.shape),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.batches.load_state_dict(state["batches"])
        self.step, self.images = state["step"], state["images"]

    def nets(self) -> dict[str, torch.nn.Module]:
        return self.model.nets

    def close(self) -> None:
        """Nothing to release: the data and the nets are plain tensors."""


class _CountingBatches:
    """The batch source, counting the images it hands out."""

    def __init__(self, batches: Batches):
        self.batches, self.images = batches, 0

    def __call__(self) -> torch.Tensor:
        batch = self.batches()
        self.images += len(batch)
        return batch
