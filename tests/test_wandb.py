"""An offline W&B run holds the scalars and the resolved config the runner logged."""

import json
import struct
import zlib
from pathlib import Path

from wandb.proto import wandb_internal_pb2

from tests.conftest import TINY_DQN, compose_config, lab, read_metrics

BLOCK = 32 * 1024
HEADER = 7  # crc32 (4), length (2), type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """Parse a ``.wandb`` file: a 7-byte file header, then LevelDB-log chunks in 32 KiB blocks."""
    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1) and version in (0, 1)
    records, pos, pending = [], 7, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # too small for a header: zero padding
            pos += left_in_block
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if length == 0 and kind == 0:
            break
        payload = data[pos + HEADER : pos + HEADER + length]
        assert zlib.crc32(bytes([kind]) + payload) & 0xFFFFFFFF == checksum
        pos += HEADER + length
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def history(records) -> list[dict]:
    """The logged rows of an offline W&B run; media are dicts (``_type``, ``path``, ...)."""
    rows = []
    for record in records:
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for item in record.history.item:  # media arrive as nested keys: [name, field]
            *parents, leaf = [item.key] if item.key else list(item.nested_key)
            node = row
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = json.loads(item.value_json)
        rows.append(row)
    return rows


def test_offline_run_holds_scalars_and_config(tmp_path):
    run = tmp_path / "run"
    result = lab(
        run,
        *TINY_DQN,
        "logger=wandb",
        "logger.wandb.mode=offline",
        "logger.wandb.tags=[ci]",
        "logger.wandb.group=spine",
        "agent.lr=0.0007",
        "eval.video=true",
    )
    assert result.returncode == 0, result.stderr
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, list(run.rglob("*"))
    records = read_records(files[0])

    rows = history(records)
    eval_rows = [h for h in rows if "eval/return_mean" in h]
    logged = [r for r in read_metrics(run) if "eval/return_mean" in r]
    assert [h["_step"] for h in eval_rows] == [r["step"] for r in logged]
    assert [h["eval/return_mean"] for h in eval_rows] == [r["eval/return_mean"] for r in logged]
    assert any("train/loss" in h and "rollout/episode_return" in h for h in rows)
    videos = [h["eval/video"] for h in rows if "eval/video" in h]
    assert len(videos) == len(logged)
    assert all(v["_type"] == "video-file" and v["path"].endswith(".mp4") for v in videos)
    assert all((files[0].parent / "files" / v["path"]).is_file() for v in videos)

    config = {}  # the resolved config arrives with the run record (and later config records)
    for record in records:
        kind = record.WhichOneof("record_type")
        updates = {"run": lambda r: r.run.config.update, "config": lambda r: r.config.update}
        if kind in updates:
            config |= {item.key: json.loads(item.value_json) for item in updates[kind](record)}
    assert config["agent"]["lr"] == 0.0007
    assert config["env"]["id"] == "CartPole-v1"
    assert config["seed"] == 0

    run_record = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run_record.run_group == "spine" and list(run_record.tags) == ["ci"]
    assert run_record.job_type == "train"
    assert run_record.project == "lab"


def test_wandb_mode_comes_from_the_environment_unless_overridden(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    assert compose_config().logger.wandb.mode == "online"
    assert compose_config("logger.wandb.mode=disabled").logger.wandb.mode == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert compose_config().logger.wandb.mode == "offline"
