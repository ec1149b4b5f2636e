"""The one runner: device, seeding, the loop, evaluation, checkpoints, signals and the summary.

It knows nothing of DQN or VAEs: it drives a ``lab.task.Task`` and calls nothing else.
"""

import dataclasses
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm.contrib.logging import logging_redirect_tqdm

from lab import checkpoint
from lab.compute import (
    Compute,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
    set_threads,
)
from lab.config import tuned_settings, validate
from lab.curves import plot_curves, read_rows
from lab.errors import ConfigError, RunFailed
from lab.loggers import Logger, MetricsFile
from lab.progress import MetricWindow, ProgressBar
from lab.summary import Summary, print_summary, write_summary
from lab.task import Task, trainable_parameters
from lab.transfer import freeze, warm_start

log = logging.getLogger("lab")
# media/curves.png is redrawn at an evaluation at most this often (and always at the end):
# drawing costs ~0.1 s, which would be a tenth of a fast CartPole run's time-to-solve.
CURVES_EVERY_SECONDS = 30.0


@dataclass
class RunState:
    """The runner's own counters, saved in every checkpoint."""

    elapsed: float = 0.0
    next_eval: int = 0
    next_log: int = 0
    next_checkpoint: int = 0
    last_eval: dict = field(default_factory=dict)
    best: dict = field(default_factory=dict)
    reached_step: int | None = None
    reached_seconds: float | None = None
    wandb_id: str | None = None
    init_from: dict | None = None  # what a warm start loaded and froze (summary.json's init_from)


@dataclass(frozen=True)
class RunFacts:
    """What summary.json says of the run besides its results."""

    settings: str | None = None  # RL: the conf/tuned file the agent took, or its defaults
    params_by_net: dict[str, int] = field(default_factory=dict)  # trainable, per net


class StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks; a second Ctrl-C stops at once."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def requested(self) -> bool:
        """What a task's ``train_step`` checks after each step (``lab.task.StopCheck``)."""
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: saving a checkpoint and stopping", signal.Signals(signum).name)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def build_task(cfg: DictConfig, compute: Compute) -> Task:
    """A generative task when ``model`` is set, else an RL task (``validate`` ruled out both)."""
    if cfg.get("model") is not None:
        from lab.gen.task import GenTask

        return GenTask(cfg, compute)
    from lab.rl.task import RLTask

    return RLTask(cfg, compute)


def run(cfg: DictConfig, run_dir: Path) -> Summary:
    """Train, evaluate and checkpoint one task to completion, a threshold or a signal."""
    validate(cfg)
    resume = Path(cfg.resume) if cfg.resume else None
    if resume is None and (
        (run_dir / "summary.json").exists() or (run_dir / "metrics.jsonl").exists()
    ):
        raise ConfigError(
            f"{run_dir} already holds a run: pass resume={run_dir} to continue it, "
            "or choose another hydra.run.dir"
        )
    saved = checkpoint.load(resume / "checkpoints" / "last.pt") if resume else None
    settings = tuned_settings(cfg)
    if settings is not None:
        log.info("settings: %s", settings)
    set_threads(cfg.threads)
    compute = Compute(resolve_device(cfg.device), cfg.precision)
    seed_everything(cfg.seed)
    task = build_task(cfg, compute)
    try:  # the task may hold processes (A3C's workers): close it whatever happens next
        state = RunState(
            next_eval=cfg.eval.interval,
            next_log=cfg.log_interval,
            next_checkpoint=cfg.checkpoint.interval,
        )
        if saved is not None:
            task.load_state_dict(saved["task"])
            state = RunState(**saved["runner"])
            set_rng_state(saved["rng"])
            MetricsFile.truncate_after(run_dir / "metrics.jsonl", task.step)
            log.info("resumed from %s at step %d", resume, task.step)
            if state.init_from:  # the weights came back; the freeze is the run's to redo
                freeze(task.nets(), state.init_from["frozen_tensors"])
        elif cfg.init_from.path is not None:
            state.init_from = warm_start(task.nets(), cfg.init_from)
        config = OmegaConf.to_container(cfg, resolve=True)
        logger = Logger(cfg, run_dir, config, state.wandb_id, start_step=task.step)
        state.wandb_id = logger.wandb_id
        facts = RunFacts(settings, trainable_parameters(task.nets()))
        log.info("params: %s trainable %s", sum(facts.params_by_net.values()), facts.params_by_net)
        summary = Loop(cfg, run_dir, task, state, logger, compute, facts).run()
    finally:
        task.close()
    print_summary(summary, run_dir)
    return summary


class Loop:
    """Training loop state that the helpers below share."""

    def __init__(
        self,
        cfg,
        run_dir: Path,
        task: Task,
        state: RunState,
        logger: Logger,
        compute: Compute,
        facts: RunFacts,
    ):
        self.cfg, self.run_dir, self.task, self.state = cfg, run_dir, task, state
        self.logger, self.compute, self.facts = logger, compute, facts
        self.window = MetricWindow(task.step_unit, task.headline_metric)
        self.started = time.perf_counter() - state.elapsed
        self.curves_due = CURVES_EVERY_SECONDS  # a run shorter than that draws at its end only
        self.window.begin(task.step, self.elapsed(), task.counters())

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def run(self) -> Summary:
        task, cfg, state = self.task, self.cfg, self.state
        status, error, exit_code = "completed", None, 0
        bar = ProgressBar(task.total_steps, task.step, f"{task.algo} {task.name}")
        try:
            with StopSignal() as stop, logging_redirect_tqdm(loggers=[logging.root]):
                while task.step < task.total_steps:
                    target = min(
                        state.next_log, state.next_eval, state.next_checkpoint, task.total_steps
                    )
                    self.window.add(task.train_step(target - task.step, stop.requested))
                    bar.update(task.step, self.window.postfix())
                    if task.step >= state.next_log:
                        self.log_window()
                    if task.step >= state.next_eval and self.evaluate(bar):
                        status = "solved"
                        break
                    if task.step >= state.next_checkpoint:
                        state.next_checkpoint += cfg.checkpoint.interval
                        self.save()
                    if stop.requested():
                        status, exit_code = "interrupted", 128 + stop.signum
                        break
                if status == "completed" and state.last_eval.get("step") != task.step:
                    self.evaluate(bar)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, still checkpointed
            status, exit_code = "interrupted", 128 + signal.SIGINT
            raise
        except Exception as e:
            status, error, exit_code = "failed", f"{type(e).__name__}: {e}", 1
            if isinstance(e, RunFailed):  # it says why in one line: no traceback
                log.error("run failed: %s", error)
            else:
                log.exception("run failed")
            raise
        finally:
            bar.close()
            self.finish(status, error, exit_code)
        return self.summary

    def log_window(self) -> None:
        self.state.next_log += self.cfg.log_interval
        self.logger.log(
            self.window.flush(self.task.step, self.elapsed()), self.task.step, self.elapsed()
        )

    def evaluate(self, bar: ProgressBar) -> bool:
        """Evaluate, log, keep the best checkpoint; True when the run should stop as solved."""
        task, state = self.task, self.state
        state.next_eval += self.cfg.eval.interval
        metrics, media = task.evaluate(self.run_dir / "media")
        elapsed = self.elapsed()
        self.logger.log(metrics, task.step, elapsed)
        self.logger.log_media(media, task.step)
        state.last_eval = {"step": task.step, **metrics}
        bar.set_eval(metrics[task.threshold_metric])
        if elapsed >= self.curves_due:
            self.curves_due = elapsed + CURVES_EVERY_SECONDS
            self.draw_curves()
        log.info("step %d  %s", task.step, "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        key = task.threshold_metric
        if self.is_better(metrics[key], state.best.get(key)):
            state.best = dict(metrics)
            checkpoint.save_atomic(
                self.checkpoint_state(resumable=False),
                self.run_dir / "checkpoints" / "best.pt",
            )
        if (
            state.reached_step is None
            and task.threshold is not None
            and self.is_better(metrics[key], task.threshold, inclusive=True)
        ):
            state.reached_step, state.reached_seconds = task.step, round(elapsed, 3)
            log.info("threshold %s %s reached at step %d", key, task.threshold, task.step)
            return bool(self.cfg.stop_on_threshold)
        return False

    def draw_curves(self) -> Path | None:
        """``media/curves.png`` from metrics.jsonl, logged to the dashboards too."""
        task = self.task
        path = plot_curves(
            read_rows(self.run_dir / "metrics.jsonl"),
            self.run_dir / "media" / "curves.png",
            task.threshold_metric,
            task.threshold,
            task.headline_metric,
            f"{task.algo} on {task.name}, seed {self.cfg.seed}",
        )
        if path is not None:
            self.logger.log_media({"curves": path}, task.step)
        return path

    def is_better(self, value: float, reference: float | None, inclusive: bool = False) -> bool:
        if reference is None:
            return True
        if inclusive and value == reference:
            return True
        return value > reference if self.task.higher_is_better else value < reference

    def checkpoint_state(self, resumable: bool) -> dict:
        self.state.elapsed = self.elapsed()
        return {
            "task": self.task.state_dict(resumable=resumable),
            "runner": dataclasses.asdict(self.state),
            "rng": rng_state(),
            # The nets by name for init_from; torch.save stores each tensor once, so this
            # index of the task's own tensors costs no space.
            "nets": {name: net.state_dict() for name, net in self.task.nets().items()},
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }

    def save(self) -> None:
        state = self.checkpoint_state(resumable=True)
        checkpoint.save_atomic(state, self.run_dir / "checkpoints" / "last.pt")

    def finish(self, status: str, error: str | None, exit_code: int) -> None:
        task, state = self.task, self.state
        try:
            if self.window.pending():
                self.logger.log(
                    self.window.flush(task.step, self.elapsed()), task.step, self.elapsed()
                )
            self.save()
        except Exception:
            if status != "failed":
                raise
            log.exception("could not save a checkpoint of the failed run")
        finally:
            wall_seconds = round(self.elapsed(), 3)  # the curves and the loggers' shutdown aside
            try:
                curves = self.draw_curves()
            except Exception:  # a picture must not cost the summary
                log.exception("could not draw the learning curves")
            else:
                if curves is not None:
                    log.info("learning curves: %s", curves)
            self.logger.close(exit_code=0 if status in ("completed", "solved") else 1)
            replaced = self.window.counters.get("counter/actors_replaced")
            self.summary = Summary(
                status=status,
                family=task.family,
                algo=task.algo,
                task=task.name,
                seed=self.cfg.seed,
                device=str(self.compute.device),
                steps=task.step,
                wall_seconds=wall_seconds,
                metrics={k: v for k, v in state.last_eval.items() if k != "step"},
                best={k: v for k, v in state.best.items() if k != "step"},
                threshold={
                    "metric": task.threshold_metric,
                    "value": task.threshold,
                    "reached_step": state.reached_step,
                    "reached_seconds": state.reached_seconds,
                },
                settings=self.facts.settings,
                params=sum(self.facts.params_by_net.values()),
                params_by_net=self.facts.params_by_net,
                actors_replaced=replaced if replaced is None else int(replaced),
                init_from=state.init_from,
                error=error,
                exit_code=exit_code,
            )
            write_summary(self.summary, self.run_dir / "summary.json")
