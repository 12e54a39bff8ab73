"""`unisono rlhf rollouts` then `unisono rlhf dpo`, as a user runs them, and their bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from unisono.cli import app

runner = CliRunner(env={"COLUMNS": "300"})


@pytest.mark.slow
def test_rollouts_then_dpo(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "text": "The cat sat on the mat."}\n'
                       '{"id": "b", "text": "The cat sat on the mat.", "instruct": "Speak slowly.", "asked": {"rate": "slow"}, "pair_of": "a"}\n')
    out = runner.invoke(app, ["rlhf", "rollouts", str(prompts), "--out", str(tmp_path / "r"), "--candidates", "2",
                              "--no-dnsmos", "--margin", "0", "--threads", "2"])
    assert out.exit_code == 0, out.output
    pairs = [json.loads(line) for line in (tmp_path / "r" / "pairs.jsonl").read_text().splitlines()]
    assert [p["id"] for p in pairs] == ["a", "b"] and all(p["margin"] >= 0 for p in pairs)
    assert {"intelligibility", "similarity", "dnsmos", "adherence", "length"} <= set(pairs[0]["chosen_rewards"])
    again = runner.invoke(app, ["rlhf", "rollouts", str(prompts), "--out", str(tmp_path / "r"), "--candidates", "2",
                                "--no-dnsmos", "--margin", "0"])  # all done: nothing is sampled again
    assert again.exit_code == 0 and len((tmp_path / "r" / "rollouts.jsonl").read_text().splitlines()) == 2

    from unisono.model.unisono import default_model_path

    out = runner.invoke(app, ["rlhf", "dpo", str(tmp_path / "r" / "pairs.jsonl"), "--init", str(default_model_path()),
                              "--out", str(tmp_path / "d"), "--steps", "2", "--threads", "2"])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "d" / "model" / "config.json").is_file()
    refused = runner.invoke(app, ["rlhf", "dpo", str(tmp_path / "r" / "pairs.jsonl"), "--init", str(default_model_path()),
                                  "--out", str(tmp_path / "d"), "--steps", "2"])
    assert refused.exit_code == 2 and "--resume" in " ".join(refused.output.split())


def test_bad_input_is_named(tmp_path):
    broken = tmp_path / "p.jsonl"
    broken.write_text('{"id": "a", "text": "ok"}\n{"id": "b"\n')
    out = runner.invoke(app, ["rlhf", "rollouts", str(broken), "--out", str(tmp_path / "r")])
    assert out.exit_code == 2 and "line 2" in " ".join(out.output.split())
    out = runner.invoke(app, ["rlhf", "dpo", str(tmp_path / "none.jsonl"), "--init", "x"])
    assert out.exit_code == 2 and "no such file" in " ".join(out.output.split())
    out = runner.invoke(app, ["rlhf", "dpo", str(broken), "--init", "x", "--out", str(tmp_path / "d")])
    assert out.exit_code == 2 and "not a preference pair" in " ".join(out.output.split())
