"""The one trainer behind every stage.

    StageConfig ─► model (fresh, or the previous stage's) ─► [vocabulary expansion]
      for each phase: trainable parameters ─► AdamW + warm-up/cosine LR
        for each step: `accumulation` micro-batches (bf16 autocast where it helps), backward,
                       clip, step; log; every N steps a checkpoint
      ─► RUN/model (a unisono checkpoint directory: the next stage's starting point)

Runs in one process, or under torchrun with FSDP2 (`fully_shard` on each decoder layer and on
the whole model): gloo on CPU, NCCL on GPU. Micro-batch g of the data stream goes to process
g mod N, so N processes with accumulation A see the batches one process sees with A x N.

Exact resume: the data stream is a pure function of (seed, micro-batch index), and a
checkpoint holds the model, optimizer, scheduler, every process's RNG states and the stream
position. A run killed at any moment continues from its last checkpoint with the same batches,
the same updates and therefore the same losses.

Outputs in RUN: config.yaml (the resolved config), metrics.jsonl (one line per step),
tb/ (TensorBoard scalars), checkpoints/, init/ (the starting model, so every process and every
resume starts from the same weights), model/ (the result).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from unisono.model.unisono import Unisono
from unisono.train import checkpoint as ckpt
from unisono.train.config import PhaseConfig, StageConfig
from unisono.train.data import Corpus, StageData, loader
from unisono.train.model_setup import expand_speech_vocabulary, initial_model, param_groups, set_trainable

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class RunExistsError(RuntimeError):
    """The output folder holds checkpoints of an earlier run and --resume was not given."""


def lr_factor(step: int, phase: PhaseConfig) -> float:
    """LR multiplier for optimizer step `step` (0-based) of a phase:
    1. linear warm-up over warmup_steps; 2. cosine / linear / constant decay to min_lr_ratio."""
    if step < phase.warmup_steps:
        return (step + 1) / phase.warmup_steps
    if phase.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - phase.warmup_steps) / max(1, phase.steps - phase.warmup_steps))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if phase.schedule == "cosine" else 1.0 - progress
    return phase.min_lr_ratio + (1.0 - phase.min_lr_ratio) * shape


def router_coef(step: int, phase: PhaseConfig) -> float | None:
    """The router aux-loss coefficient at a step: annealed linearly across the phase."""
    if phase.router_aux_coef is None:
        return None
    start, end = phase.router_aux_coef
    return start + (end - start) * step / max(1, phase.steps - 1)


class Trainer:
    def __init__(
        self,
        config: StageConfig,
        out_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
        on_step: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.config, self.out = config, Path(out_dir)
        self.resume, self.show_progress, self.on_step = resume, progress, on_step
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.distributed = self.world > 1
        self.device = torch.device("cpu")
        self.model: Any = None

    # ---- setup ---------------------------------------------------------------------------------
    def _init_distributed(self) -> None:
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    def _barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _use_bf16(self) -> bool:
        p = self.config.run.precision
        if p == "auto":
            return self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        return p == "bf16"

    def _prepare_run_dir(self) -> Path | None:
        """The checkpoint to resume from, if any; refuses to overwrite an earlier run."""
        found = ckpt.latest_checkpoint(self.out)
        if found is not None and not self.resume:
            raise RunExistsError(
                f"{self.out} holds checkpoints of an earlier run (latest {found.name}); "
                "pass --resume to continue it, or choose another --out"
            )
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            for p in ckpt.remove_partial(self.out):
                log.info("removed %s, left by an interrupted checkpoint write", p.name)
            if found is None:  # a fresh start: nothing of an earlier, uncheckpointed attempt is reused
                shutil.rmtree(self.out / "init", ignore_errors=True)
                shutil.rmtree(self.out / "tb", ignore_errors=True)
                (self.out / METRICS_FILE).unlink(missing_ok=True)
        return found

    def _initial_model(self, corpus: Corpus) -> Unisono:
        """Every process starts from RUN/init, written once by the first process."""
        init_dir = self.out / "init"
        if self.is_main and not (init_dir / "config.json").is_file():
            ckpt.seed_everything(self.config.run.seed)
            model = initial_model(self.config.model, corpus.texts())
            if self.config.model.speech_tokens is not None:
                expand_speech_vocabulary(model, self.config.model.speech_tokens)
            model.save(init_dir)
        self._barrier()
        return Unisono.load(init_dir)

    def _wrap(self, model: Unisono) -> Any:
        if not self.distributed:
            return model.to(self.device)
        from torch.distributed.fsdp import fully_shard

        model.to(self.device)
        for layer in model.decoder.model.layers:
            fully_shard(layer)
        fully_shard(model)
        return model

    # ---- state ---------------------------------------------------------------------------------
    def _full_state(self, optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict | None]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(self.model, options=opts)
        optim_state = get_optimizer_state_dict(self.model, optimizer, options=opts) if optimizer is not None else None
        return model_state, optim_state

    def _load_state(self, path: Path, optimizer: torch.optim.Optimizer | None, scheduler: Any) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, ckpt.load_tensors(path, "model.pt"), options=opts)
        if optimizer is not None:
            saved = ckpt.load_tensors(path, "optim.pt")
            set_optimizer_state_dict(self.model, optimizer, saved["optimizer"], options=opts)
            scheduler.load_state_dict(saved["scheduler"])
        states = ckpt.load_tensors(path, "rng.pt")
        ckpt.set_rng_state(states[self.rank] if self.rank < len(states) else states[0])

    def _save_checkpoint(self, step: int, state: dict, optimizer, scheduler) -> None:
        model_state, optim_state = self._full_state(optimizer)
        rng = ckpt.rng_state()
        rngs = [None] * self.world if self.distributed else [rng]
        if self.distributed:
            dist.all_gather_object(rngs, rng)
        if self.is_main:
            ckpt.write_checkpoint(
                self.out, step, model_state, {"optimizer": optim_state, "scheduler": scheduler.state_dict()},
                rngs, state, keep=self.config.run.keep_checkpoints,
            )
        self._barrier()

    def _export(self, base: Unisono) -> Path:
        """RUN/model: the trained weights in a plain unisono checkpoint directory."""
        model_state, _ = self._full_state(None)
        if self.is_main:
            if self.distributed:  # `base` holds sharded parameters now: fill a plain copy
                base = Unisono.load(self.out / "init")
            missing, unexpected = base.load_state_dict(model_state, strict=False)
            if unexpected or [k for k in missing if not k.startswith("encoder.")]:
                raise RuntimeError(f"trained state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
            stages = list(base.config.meta.get("stages", []))
            stages.append({
                "stage": self.config.stage,
                "phases": [{"name": p.name, "steps": p.steps, "lr": p.lr, "trainable": p.trainable} for p in self.config.phases],
                "data": list(self.config.data.train),
                "tasks": dict(self.config.data.tasks),
                "processes": self.world,
            })
            base.config.meta["stages"] = stages
            base.save(self.out / "model")
        self._barrier()
        return self.out / "model"

    # ---- metrics -------------------------------------------------------------------------------
    def _open_metrics(self, resumed_step: int):
        """metrics.jsonl and TensorBoard, cut back to `resumed_step` (a killed run may have logged past it)."""
        path = self.out / METRICS_FILE
        if path.is_file():
            keep = [line for line in path.read_text().splitlines() if line.strip() and _step_of(line) <= resumed_step]
            path.write_text("".join(line + "\n" for line in keep))
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(self.out / "tb"), purge_step=resumed_step + 1 if resumed_step else None)
        return open(path, "a"), writer

    def _reduce_logs(self, logs: list[dict[str, float]]) -> dict[str, float]:
        """Mean of each logged value over micro-batches and processes."""
        if self.distributed:
            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, logs)
            logs = [x for part in gathered for x in part]
        keys = sorted({k for x in logs for k in x})
        return {k: sum(x[k] for x in logs if k in x) / sum(1 for x in logs if k in x) for k in keys}

    # ---- the run -------------------------------------------------------------------------------
    def run(self) -> Path:
        cfg = self.config
        self._init_distributed()
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        found = self._prepare_run_dir()
        self._barrier()
        if self.is_main:
            import yaml

            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True))
        corpus = Corpus.load(cfg.data.train)
        base = self._initial_model(corpus)
        self.model = self._wrap(base).train()

        resume_state = ckpt.read_state(found) if found else None
        step = resume_state["step"] if resume_state else 0
        metrics_file = writer = None
        if self.is_main:
            metrics_file, writer = self._open_metrics(step)
        ckpt.seed_everything(cfg.run.seed + self.rank)
        try:
            start_phase = resume_state["phase"] if resume_state else 0
            for p_index in range(start_phase, len(cfg.phases)):
                phase_state = resume_state if (resume_state and p_index == start_phase) else None
                step = self._run_phase(p_index, step, corpus, found if phase_state else None, phase_state, metrics_file, writer)
        finally:
            if metrics_file:
                metrics_file.close()
            if writer:
                writer.close()
        # the trained weights, as a plain unisono checkpoint for the next stage
        out = self._export(base)
        if self.distributed:
            dist.destroy_process_group()
        return out

    def _run_phase(self, p_index: int, step: int, corpus: Corpus, found: Path | None, resume_state: dict | None,
                   metrics_file, writer) -> int:
        cfg, phase = self.config, self.config.phases[p_index]
        model = self.model
        names = set_trainable(model, phase.trainable, encoder_frozen=model.config.encoder.frozen)
        if self.is_main:
            n = sum(p.numel() for p in model.parameters() if p.requires_grad)
            log.info("phase %s: %d trainable tensors, %.2fM parameters, %d steps", phase.name, len(names), n / 1e6, phase.steps)
        optimizer = torch.optim.AdamW(
            param_groups(model, cfg.optim.weight_decay), lr=phase.lr, betas=cfg.optim.betas, eps=cfg.optim.eps,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, phase))
        phase_step = 0
        if resume_state is not None and found is not None:
            phase_step = resume_state["phase_step"]
            # a checkpoint taken at a phase boundary holds the previous phase's optimizer
            self._load_state(found, optimizer if phase_step else None, scheduler if phase_step else None)
            if self.is_main:
                log.info("resumed from %s (step %d, phase %s step %d)", found.name, step, phase.name, phase_step)

        data = StageData(
            corpus, model.vocab, cfg.data, tasks=phase.tasks, seed=cfg.run.seed + 1000 * p_index,
            n_mels=model.config.encoder.n_mels, adaptor_stride=model.config.adaptor.stride,
        )
        accum, world = cfg.run.accumulation, self.world
        per_step = accum * world
        batches = loader(data, phase_step * per_step + self.rank, world, cfg.data.num_workers)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self._use_bf16() else contextlib.nullcontext()
        trainable = [p for p in model.parameters() if p.requires_grad]
        bar = self._progress(phase, phase_step)
        try:
            while phase_step < phase.steps:
                t0 = time.perf_counter()
                coef = router_coef(phase_step, phase)
                if coef is not None:
                    model.config.decoder.router_aux_loss_coef = coef
                logs = []
                for _ in range(accum):
                    batch = next(batches).to(self.device)
                    with autocast:
                        out = model(batch, main=phase.main_loss, mtp=phase.mtp_loss, ctc_weight=phase.ctc_weight)
                    (out.loss / accum).backward()
                    logs.append({**out.logs, "tokens": float(batch.attention_mask.sum())})
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf"))
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                phase_step += 1
                step += 1

                row = self._reduce_logs(logs)
                row["tokens"] = int(round(row["tokens"] * per_step))  # mean per micro-batch -> per step
                if hasattr(grad_norm, "full_tensor"):
                    grad_norm = grad_norm.full_tensor()
                row.update(step=step, phase=phase.name, phase_step=phase_step, lr=lr, grad_norm=float(grad_norm),
                           seconds=time.perf_counter() - t0, failed_clips=data.failed_clips)
                if coef is not None:
                    row["router_aux_coef"] = coef
                if self.is_main:
                    self._log(row, metrics_file, writer, bar)
                if self.on_step:
                    self.on_step(row)
                last = phase_step == phase.steps
                final = last and p_index == len(cfg.phases) - 1
                if step % cfg.run.checkpoint_every == 0 or final:
                    if last and not final:  # the next phase starts with its own optimizer
                        state = {"phase": p_index + 1, "phase_step": 0, "micro_batch": 0, "world_size": world}
                    else:
                        position = phase_step * per_step  # the data-loader position: next micro-batch
                        state = {"phase": p_index, "phase_step": phase_step, "micro_batch": position,
                                 "epoch_position": list(data.locate(position)), "world_size": world}
                    self._save_checkpoint(step, state, optimizer, scheduler)
        finally:
            if bar is not None:
                bar.stop()
        return step

    # ---- output --------------------------------------------------------------------------------
    def _progress(self, phase: PhaseConfig, done: int):
        if not (self.is_main and self.show_progress):
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        if not console.is_terminal:
            return None
        bar = Progress(TextColumn(f"[bold]{self.config.stage}/{phase.name}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console, transient=False)
        bar.start()
        bar.add_task(phase.name, total=phase.steps, completed=done, info="")
        return bar

    def _log(self, row: dict[str, Any], metrics_file, writer, bar) -> None:
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()
        step = row["step"]
        for k, v in row.items():
            if isinstance(v, (int, float)) and k not in ("step", "phase_step"):
                writer.add_scalar(f"train/{k}", v, step)
        if bar is not None:
            task = bar.task_ids[0]
            bar.update(task, completed=row["phase_step"], info=f"loss {row['loss']:.3f}  lr {row['lr']:.2e}")
        elif step % self.config.run.log_every == 0 or step == 1:
            log.info("step %d %s loss %.4f lr %.2e grad %.2f %.2fs", step, row["phase"], row["loss"], row["lr"],
                     row["grad_norm"], row["seconds"])


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # a torn last line of a killed run: dropped
