"""Warm starts: ``init_from.path=<run dir or .pt>`` copies a trained run's weights into a new one.

Every checkpoint holds its task's nets by name (``checkpoint["nets"]``: DQN's ``q`` and
``q_target``, A2C's ``model``, SB3's ``policy``, a GAN's ``generator`` and ``discriminator``);
a tensor is named ``<net>.<parameter>``, e.g. ``q.torso.body.1.weight``. Each net of the new
run reads the source net of the same name, or the source's first net when there is none (DQN's
``q`` from A2C's ``model``: their torsos share names), and takes every tensor whose name and
shape match; the rest keep their fresh initialisation. Only weights move: optimizer state,
counters and RNG start afresh (continuing a run is ``resume=``).

``init_from.freeze`` lists name prefixes, matched whole dotted component by component, with or
without the net's name: ``torso`` freezes the torso of every net, ``q.torso`` only DQN's
online one. A frozen tensor must have been loaded (a frozen random layer is a mistake).
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from omegaconf import DictConfig
from torch import nn

from lab import checkpoint
from lab.errors import ConfigError

log = logging.getLogger("lab")

Tensors = dict[str, torch.Tensor]  # a net's state_dict: parameters and buffers by name


class Row(NamedTuple):
    """One tensor of the new run's nets and where its values came from."""

    name: str  # <net>.<tensor>
    shape: tuple[int, ...]
    status: str  # "loaded", "skipped" (the source's shape differs) or "new" (no such name)
    source: str | None = None  # the source tensor it was (or would have been) copied from
    source_shape: tuple[int, ...] | None = None
    frozen: bool = False


@dataclass
class Plan:
    """What a warm start does to every tensor, and which source tensors it leaves unused."""

    rows: list[Row]
    unused: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(row.status == status for row in self.rows)

    def counts(self) -> dict[str, int]:
        return {
            "loaded": self.count("loaded"),
            "skipped": self.count("skipped"),
            "new": self.count("new"),
            "unused": len(self.unused),
            "frozen": sum(row.frozen for row in self.rows),
        }


def pair_nets(source: Iterable[str], target: Iterable[str]) -> dict[str, str]:
    """Target net -> the source net it reads: the one of its name, else the source's first."""
    source = list(source)
    return {name: name if name in source else source[0] for name in target}


def match(source: dict[str, Tensors], target: dict[str, Tensors]) -> Plan:
    """Compare the nets tensor by tensor: loaded where name and shape agree, skipped where only
    the name does, new where the source has no such name."""
    rows, used = [], set()
    for net, src_net in pair_nets(source, target).items():
        for key, tensor in target[net].items():
            name, src_name, shape = f"{net}.{key}", f"{src_net}.{key}", tuple(tensor.shape)
            if key not in source[src_net]:
                rows.append(Row(name, shape, "new"))
                continue
            src_shape = tuple(source[src_net][key].shape)
            status = "loaded" if src_shape == shape else "skipped"
            if status == "loaded":
                used.add(src_name)
            rows.append(Row(name, shape, status, src_name, src_shape))
    names = [f"{net}.{key}" for net, tensors in source.items() for key in tensors]
    return Plan(rows, [name for name in names if name not in used])


def selects(prefix: str, name: str) -> bool:
    """Whether the freeze entry ``prefix`` names tensor ``name`` (``<net>.<key>``): a whole-
    component prefix of the full name or of the name within its net."""
    within = name.split(".", 1)[1]
    return any(n == prefix or n.startswith(prefix + ".") for n in (name, within))


def mark_frozen(plan: Plan, prefixes: Iterable[str], parameters: set[str]) -> Plan:
    """The plan with the ``parameters`` that ``prefixes`` select marked frozen; an entry that
    selects nothing, or a tensor that was not loaded, is a ConfigError."""
    rows = list(plan.rows)
    for prefix in prefixes:
        hits = [
            i for i, row in enumerate(rows) if row.name in parameters and selects(prefix, row.name)
        ]
        if not hits:
            nets = sorted({row.name.split(".", 1)[0] for row in rows})
            parts = sorted({row.name.split(".")[1] for row in rows})
            raise ConfigError(
                f"init_from.freeze: {prefix!r} names no parameter of this run's nets; give a "
                f"name prefix such as one of {', '.join(parts)} (or <net>.<prefix>, nets: "
                f"{', '.join(nets)})"
            )
        for i in hits:
            row = rows[i]
            if row.status != "loaded":
                raise ConfigError(
                    f"init_from.freeze: {prefix!r} would freeze {row.name}, which was not "
                    f"loaded ({row.status}): a frozen layer must come from the source run"
                )
            rows[i] = row._replace(frozen=True)
    return Plan(rows, plan.unused)


def _drop_grad(p: torch.Tensor) -> None:
    p.grad = None  # optimizers skip a parameter without a gradient: no step, no weight decay


def freeze(nets: dict[str, nn.Module], names: Iterable[str]) -> None:
    """Keep the named parameters fixed: no gradient, and any gradient computed anyway (a GAN
    turns its discriminator's ``requires_grad`` back on each step) is dropped before the step.
    Parameters that take no gradient already (DQN's target copy) are left as they are."""
    wanted = set(names)
    for net, module in nets.items():
        for key, p in module.named_parameters():
            if f"{net}.{key}" in wanted and p.requires_grad:
                p.register_post_accumulate_grad_hook(_drop_grad)  # needs requires_grad: first
                p.requires_grad_(False)


def copy_loaded(nets: dict[str, nn.Module], source: dict[str, Tensors], plan: Plan) -> None:
    """Copy the loaded tensors in place (shared-memory weights, A3C's, stay shared)."""
    states = {net: module.state_dict(keep_vars=True) for net, module in nets.items()}
    with torch.no_grad():
        for row in plan.rows:
            if row.status == "loaded":
                net, key = row.name.split(".", 1)
                src_net, src_key = row.source.split(".", 1)
                states[net][key].copy_(source[src_net][src_key])


def format_table(plan: Plan, source: str) -> str:
    """The tensors of the new run, one a line, with where each came from."""
    c = plan.counts()
    lines = [
        f"init_from {source}: {c['loaded']} tensors loaded, {c['skipped']} skipped (shapes "
        f"differ), {c['new']} newly initialised, {c['frozen']} frozen; "
        f"{c['unused']} source tensors unused"
    ]
    width = max((len(row.name) for row in plan.rows), default=0)
    for row in plan.rows:
        status = row.status
        if row.status == "skipped":
            status += f": source {row.source} is {list(row.source_shape)}"
        elif row.status == "loaded" and row.source != row.name:
            status += f" from {row.source}"
        status += ", frozen" if row.frozen else ""
        lines.append(f"  {row.name:<{width}}  {list(row.shape)!s:<14} {status}")
    if plan.unused:
        lines.append(f"  unused source tensors: {', '.join(plan.unused)}")
    return "\n".join(lines)


def checkpoint_file(path: str) -> Path:
    """A checkpoint file as given, or a run dir's ``best.pt`` (else its ``last.pt``)."""
    given = Path(path).expanduser()
    if given.is_file():
        return given
    if not given.is_dir():
        raise ConfigError(f"init_from.path={path}: no such run directory or checkpoint file")
    for name in ("best.pt", "last.pt"):
        if (given / "checkpoints" / name).is_file():
            return given / "checkpoints" / name
    raise ConfigError(
        f"init_from.path={path}: the run directory has no checkpoints/best.pt or last.pt "
        "(did it fail before its first evaluation?)"
    )


def source_of(saved: dict) -> str:
    """``<algo> on <task>`` of the run that wrote a checkpoint, from the config it holds."""
    config = saved.get("config") or {}
    what = config.get("agent") or config.get("model") or {}
    where = (config.get("env") or {}).get("id") or (config.get("dataset") or {}).get("name")
    return f"{what.get('name', '?')} on {where or '?'}"


def warm_start(nets: dict[str, nn.Module], init_from: DictConfig) -> dict:
    """Copy, report and freeze as ``init_from`` says; what summary.json records of it."""
    path = checkpoint_file(init_from.path)
    saved = checkpoint.load(path)
    if "nets" not in saved:
        raise ConfigError(
            f"init_from.path={init_from.path}: {path} predates checkpoints that name their "
            "nets; re-run the source (or resume it for one checkpoint) with this version"
        )
    source = saved["nets"]
    targets = {net: module.state_dict() for net, module in nets.items()}
    plan = match(source, targets)
    origin = f"{path} ({source_of(saved)})"
    if plan.count("loaded") == 0:
        raise ConfigError(
            f"init_from.path={init_from.path}: its nets ({', '.join(source)}, from "
            f"{source_of(saved)}) share no tensor name and shape with this run's "
            f"({', '.join(nets)}); warm-start from a run whose net fits"
        )
    parameters = {f"{n}.{k}" for n, module in nets.items() for k, _ in module.named_parameters()}
    plan = mark_frozen(plan, init_from.freeze or [], parameters)
    table = format_table(plan, origin)
    counts = plan.counts()
    if init_from.strict and (counts["skipped"] or counts["new"] or counts["unused"]):
        raise ConfigError(
            f"init_from.strict=true: {counts['skipped']} tensors skipped, {counts['new']} new, "
            f"{counts['unused']} source tensors unused ({path}); drop strict to load what fits"
        )
    copy_loaded(nets, source, plan)
    frozen = [row.name for row in plan.rows if row.frozen]
    freeze(nets, frozen)
    log.info("%s", table)
    return {
        "path": str(path.resolve()),
        "source": source_of(saved),
        **counts,
        "frozen_tensors": frozen,
    }
