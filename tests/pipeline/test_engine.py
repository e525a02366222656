"""StageGraph on a toy two-stage pipeline: inputs first and once, input hashes chained, finished stages skipped,
a changed upstream config recomputes downstream, unknown stage names refused."""

from __future__ import annotations

import json

import pytest

from cellseg.pipeline.engine import StageGraph, StageSpec


class Toy:
    def __init__(self, scale: int) -> None:
        self.scale, self.calls = scale, []

    def numbers_config(self, t: int) -> dict:
        return {"scale": self.scale}

    def numbers(self, stage, inputs) -> dict:
        self.calls.append(stage.key)
        (stage.dir / "numbers.json").write_text(json.dumps([self.scale * t for t in range(3)]))
        return {"n": 3}

    def total(self, stage, inputs) -> dict:
        self.calls.append(stage.key)
        return {"total": sum(json.loads((inputs["numbers"].dir / "numbers.json").read_text())) + stage.round}


TOY_STAGES = (
    StageSpec("numbers", Toy.numbers_config, Toy.numbers),
    StageSpec("total", lambda toy, t: {}, Toy.total, inputs=lambda toy, t: [("numbers", 0)]),
)


def run(tmp_path, scale: int) -> tuple[Toy, list]:
    toy = Toy(scale)
    stages = StageGraph(TOY_STAGES, toy, tmp_path / "run", None).run([("total", 1), ("total", 2)])
    return toy, stages


def test_inputs_run_first_and_once_and_finished_stages_are_skipped(tmp_path):
    toy, stages = run(tmp_path, 2)
    assert toy.calls == ["numbers_0", "total_1", "total_2"]
    assert [s.summary["total"] for s in stages] == [7, 8]
    numbers_hash = json.loads((tmp_path / "run" / "numbers_0" / "done.json").read_text())["hash"]
    assert stages[0].inputs == [numbers_hash]

    again, _ = run(tmp_path, 2)
    assert again.calls == []
    changed, stages = run(tmp_path, 3)  # a new upstream config changes every downstream hash
    assert changed.calls == ["numbers_0", "total_1", "total_2"] and stages[0].summary["total"] == 10


def test_an_unknown_stage_is_refused_with_the_known_names(tmp_path):
    with pytest.raises(KeyError, match="'numbers', 'total'"):
        StageGraph(TOY_STAGES, Toy(1), tmp_path, None).get("predict", 0)
