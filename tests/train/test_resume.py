"""Killed runs: kill -9 mid-run, resume, and the run continues exactly as if never interrupted;
two processes under torchrun + FSDP2 (gloo) learn what one process learns."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.train.conftest import write_corpus
from unisono.train import checkpoint as ckpt

pytestmark = pytest.mark.slow

STEPS = 12


def write_config(folder: Path, manifest: Path, steps: int = STEPS, accumulation: int = 1, checkpoint_every: int = 2) -> Path:
    import yaml

    cfg = {
        "stage": "sft-asr",
        "model": {"init": "unisono-test", "tokenizer_vocab_size": 300},
        "data": {"train": [str(manifest)], "tasks": {"asr": 1.0}, "max_tokens": 300,
                 "specaugment": {"freq_masks": 1, "freq_width": 10, "time_masks": 1, "time_width": 0.1}},
        "run": {"seed": 3, "checkpoint_every": checkpoint_every, "keep_checkpoints": 2, "threads": 1,
                "accumulation": accumulation},
        # two phases, so that the resume also crosses a phase boundary with a fresh optimizer
        "phases": [
            {"name": "one", "steps": steps // 2, "trainable": ["adaptor.*", "decoder.*"], "lr": 2e-3, "warmup_steps": 2},
            {"name": "two", "steps": steps - steps // 2, "trainable": ["adaptor.*", "decoder.*", "mtp.*"], "lr": 1e-3,
             "mtp_loss": True},
        ],
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_cmd(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "unisono.cli", "train", "sft-asr", "--config", str(config), "--out", str(out), *extra]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def losses(run: Path) -> list[tuple[int, float, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["grad_norm"]) for r in rows]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    manifest = write_corpus(folder / "corpus", n=6)
    return folder, manifest, write_config(folder, manifest)


def test_kill_9_mid_run_then_resume_continues_identically(setup):
    folder, _, config = setup
    reference, killed = folder / "reference", folder / "killed"
    subprocess.run(train_cmd(config, reference), check=True, env=env(), capture_output=True, timeout=600)

    proc = subprocess.Popen(train_cmd(config, killed), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (ckpt.checkpoint_path(killed, 4) / ckpt.STATE_FILE).is_file():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "model").exists()
    done_before = len(losses(killed))
    assert 4 <= done_before < STEPS

    # without --resume the earlier run is protected, not overwritten
    refused = subprocess.run(train_cmd(config, killed), env=env(), capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    # a checkpoint write cut short leaves a hidden folder; resuming ignores and removes it
    torn = ckpt.checkpoint_path(killed, 99).parent / ".step-00000099.tmp-1"
    torn.mkdir()
    (torn / "model.pt").write_bytes(b"\x00" * 10)
    subprocess.run(train_cmd(config, killed, "--resume"), check=True, env=env(), capture_output=True, timeout=600)
    assert not torn.exists()

    # the loss curve of the killed-and-resumed run is the uninterrupted one, step for step
    assert losses(killed) == losses(reference)
    assert [s for s, _, _ in losses(killed)] == list(range(1, STEPS + 1))
    from unisono.model.unisono import Unisono

    a, b = Unisono.load(reference / "model").state_dict(), Unisono.load(killed / "model").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fsdp2_two_processes_match_one_process(setup):
    folder, manifest, _ = setup
    # one process with 2 micro-batches per step sees what 2 processes with 1 each see
    for name in ("single", "dual"):
        (folder / name).mkdir()
    single_cfg = write_config(folder / "single", manifest, steps=4, accumulation=2, checkpoint_every=100)
    dual_cfg = write_config(folder / "dual", manifest, steps=4, accumulation=1, checkpoint_every=100)
    single, dual = folder / "single" / "run", folder / "dual" / "run"
    subprocess.run(train_cmd(single_cfg, single), check=True, env=env(), capture_output=True, timeout=600)
    with socket.socket() as s:  # a free port: a fixed one may still be held by an earlier run
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(port)]
    result = subprocess.run(torchrun + train_cmd(dual_cfg, dual)[1:], env=env(), capture_output=True, text=True, timeout=600)
    # the children's own errors come before torchrun's summary: show both
    assert result.returncode == 0, result.stderr[:4000] + "\n...\n" + result.stderr[-2000:]

    one, two = losses(single), losses(dual)
    assert [s for s, _, _ in two] == [1, 2, 3, 4]
    for (_, l1, g1), (_, l2, g2) in zip(one, two):
        assert l2 == pytest.approx(l1, rel=1e-4)
        assert g2 == pytest.approx(g1, rel=1e-3)
    meta = json.loads((dual / "model" / "config.json").read_text())["meta"]["stages"][-1]
    assert meta["processes"] == 2
    from unisono.model.unisono import Unisono

    a, b = Unisono.load(single / "model").state_dict(), Unisono.load(dual / "model").state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-5)
