"""The time-to-solve table on a fabricated folder of runs, medians worked out by hand."""

import json

from lab.bench import time_to_solve_table


def _summary(path, algo, seed, reached_seconds, reached_step, wall):
    path.mkdir(parents=True)
    threshold = {
        "metric": "eval/return_mean",
        "value": 475.0,
        "reached_step": reached_step,
        "reached_seconds": reached_seconds,
    }
    (path / "summary.json").write_text(
        json.dumps(
            {
                "status": "solved" if reached_step else "completed",
                "family": "rl",
                "algo": algo,
                "task": "CartPole-v1",
                "seed": seed,
                "device": "cpu",
                "steps": 50000,
                "wall_seconds": wall,
                "metrics": {},
                "best": {},
                "threshold": threshold,
            }
        )
    )


def test_medians_and_solved_counts(tmp_path):
    _summary(tmp_path / "0", "dqn", 0, 10.0, 20000, 10.5)
    _summary(tmp_path / "1", "dqn", 1, 30.0, 40000, 30.5)
    _summary(tmp_path / "2", "dqn", 2, 20.0, 25000, 20.5)
    _summary(tmp_path / "3", "sb3_dqn", 0, None, None, 90.0)
    _summary(tmp_path / "4", "sb3_dqn", 1, 60.0, 45000, 61.0)
    table = time_to_solve_table(tmp_path).splitlines()
    assert table[2] == ("| dqn | CartPole-v1 | 3/3 | 20.0 | 25,000 | 20.5 | 10.0, 30.0, 20.0 |")
    # The unsolved seed counts against `solved` and is left out of the time medians.
    assert table[3] == ("| sb3_dqn | CartPole-v1 | 1/2 | 60.0 | 45,000 | 75.5 | —, 60.0 |")
