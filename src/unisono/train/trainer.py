"""The one trainer behind every stage: the loop, the LR schedule, checkpoints and exact resume,
metrics.jsonl / TensorBoard logging and the progress bar. What is trained, on what and towards
what comes from an `Objective` (`unisono.train.backbone` for the backbone's stages, the codec's
jobs in `unisono.train.codec_jobs`):

    objective.prepare / build ─► the model (the trained parameters; the checkpoint holds exactly these)
      for each phase: objective.trainable ─► AdamW (objective.param_groups) + warm-up/cosine LR
        for each step: `accumulation` micro-batches of objective.stream (bf16 autocast where it helps),
                       objective.loss, backward, clip, step; log; every N steps a checkpoint
      ─► objective.export: RUN/model (the result: the next stage's starting point)

Runs in one process, or under torchrun with FSDP2 (`fully_shard` on the objective's shard units and
on the whole model): gloo on CPU, NCCL on GPU. Micro-batch g of the data stream goes to process
g mod N, so N processes with accumulation A see the batches one process sees with A x N.

Exact resume: an objective's data stream is a pure function of (seed, micro-batch index), and a
checkpoint holds the model, optimizer, scheduler, the objective's own state (e.g. a discriminator
that trains beside the model), every process's RNG states and the stream position. A run killed
at any moment continues from its last checkpoint with the same batches, the same updates and
therefore the same losses.

Outputs in RUN: config.yaml (the resolved config), metrics.jsonl (one line per step),
tb/ (TensorBoard scalars), checkpoints/, model/ (the result), and what the objective writes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import contextlib
import json
import logging
import math
import os
import shutil
import time
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch
import torch.distributed as dist

from unisono.train import checkpoint as ckpt
from unisono.train.config import PhaseConfig

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class RunExistsError(RuntimeError):
    """The output folder holds checkpoints of an earlier run and --resume was not given."""


class Stream(Protocol):
    """An endless stream of micro-batches, each a pure function of (the stream's seed, its index g)."""

    def batches(self, start: int, stride: int) -> Iterator[Any]:
        """Micro-batches start, start + stride, ... ; each has `.to(device)`."""

    def position(self, g: int) -> dict[str, Any]:
        """Where micro-batch g lies, for the checkpoint's state.json (informative: g alone resumes)."""

    def counters(self) -> dict[str, Any]:
        """Running counts logged with every step (e.g. clips that failed to load)."""


class Objective(ABC):
    """What a run trains: its model, its data, its loss and its result. The defaults suit a model
    whose parameters all decay and whose phases name trainable parameters by fnmatch patterns."""

    # logs that count something per micro-batch (e.g. tokens): the step's row gives their total
    COUNTS: tuple[str, ...] = ()

    def prepare(self, run: Path) -> None:
        """Once, in the first process, before any process builds: write what every process must
        start from identically (e.g. RUN/init)."""

    @abstractmethod
    def build(self, run: Path, device: torch.device) -> torch.nn.Module:
        """The model whose parameters train (and that the checkpoint holds), on the CPU; the same in
        every process. Helpers the loss needs (frozen models) may go to `device` here."""

    def shard_units(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        """Submodules sharded on their own under FSDP2 (then the whole model is)."""
        return []

    def trainable(self, model: torch.nn.Module, phase: PhaseConfig) -> list[str]:
        """Set requires_grad for a phase; returns the trainable parameter names."""
        names = []
        for name, p in model.named_parameters():
            p.requires_grad_(any(fnmatch(name, pattern) for pattern in phase.trainable))
            if p.requires_grad:
                names.append(name)
        if not names:
            raise ValueError(f"no parameter matches the trainable patterns {phase.trainable}")
        return names

    def param_groups(self, model: torch.nn.Module, weight_decay: float) -> list[dict]:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]

    @abstractmethod
    def stream(self, model: torch.nn.Module, phase_index: int, phase: PhaseConfig, seed: int) -> Stream:
        ...

    def begin_step(self, model: torch.nn.Module, phase: PhaseConfig, phase_step: int) -> dict[str, float]:
        """Called before each optimizer step's micro-batches; returns figures logged once with the step."""
        return {}

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: Any, phase: PhaseConfig) -> tuple[torch.Tensor, dict[str, float]]:
        """One micro-batch's loss and the figures to log (a pure function of the model and the batch,
        the global RNG aside)."""

    def extra_state(self) -> dict[str, Any]:
        """What else a checkpoint must hold for an exact resume (state that trains beside the model)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore `extra_state` from a checkpoint."""

    def checkpoint_state(self, model: torch.nn.Module, model_state: dict[str, torch.Tensor],
                         optim_state: dict | None) -> tuple[dict[str, torch.Tensor], dict | None]:
        """What of the full model and optimizer state a resume checkpoint holds (default: all). An
        objective whose `build` gives the same starting weights in every process and every resume
        may leave out what never trains."""
        return model_state, optim_state

    def restore_state(self, model: torch.nn.Module, model_state: dict[str, torch.Tensor],
                      optim_state: dict | None) -> tuple[dict[str, torch.Tensor], dict | None, bool]:
        """The inverse of `checkpoint_state`: the states to load, and whether the model state is complete
        (False: what it leaves out keeps the weights `build` gave)."""
        return model_state, optim_state, True

    @abstractmethod
    def export(self, model_state: dict[str, torch.Tensor], run: Path, processes: int) -> Path:
        """Write the result from the trained state (first process only); returns where."""


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


class Trainer:
    """Runs `objective` through `config`: anything with `stage` (the run's name), `optim`
    (OptimConfig), `run` (RunConfig), `phases` (PhaseConfig list) and `to_dict()`. Without an
    objective, `config` is a backbone StageConfig and its stage is trained."""

    def __init__(
        self,
        config: Any,
        out_dir: str | Path,
        *,
        objective: Objective | None = None,
        resume: bool = False,
        progress: bool = True,
        on_step: Callable[[dict[str, Any]], None] | None = None,
    ):
        if objective is None:
            from unisono.train.backbone import BackboneObjective

            objective = BackboneObjective(config)
        self.config, self.out, self.objective = config, Path(out_dir), objective
        self.resume, self.show_progress, self.on_step = resume, progress, on_step
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.distributed = self.world > 1
        self.device = torch.device("cpu")
        self.model: Any = None

    # ---- setup ---------------------------------------------------------------------------------
    def _init_distributed(self) -> None:
        wanted = getattr(self.config.run, "device", "auto")
        if wanted == "cuda" and not torch.cuda.is_available():
            raise ValueError("run.device is cuda, and this torch sees no CUDA device")
        if torch.cuda.is_available() and wanted != "cpu":
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

    def _wrap(self, model: torch.nn.Module) -> Any:
        if not self.distributed:
            return model.to(self.device)
        from torch.distributed.fsdp import fully_shard

        model.to(self.device)
        for unit in self.objective.shard_units(model):
            fully_shard(unit)
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

        saved = ckpt.load_tensors(path, "optim.pt")
        model_state, optim_state, complete = self.objective.restore_state(
            self.model, ckpt.load_tensors(path, "model.pt"), saved["optimizer"] if optimizer is not None else None)
        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, model_state, options=StateDictOptions(full_state_dict=True, strict=complete))
        if optimizer is not None:
            set_optimizer_state_dict(self.model, optimizer, optim_state, options=opts)
            scheduler.load_state_dict(saved["scheduler"])
        if saved.get("objective"):
            self.objective.load_extra_state(saved["objective"])
        states = ckpt.load_tensors(path, "rng.pt")
        ckpt.set_rng_state(states[self.rank] if self.rank < len(states) else states[0])

    def _save_checkpoint(self, step: int, state: dict, optimizer, scheduler) -> None:
        model_state, optim_state = self.objective.checkpoint_state(self.model, *self._full_state(optimizer))
        rng = ckpt.rng_state()
        rngs = [None] * self.world if self.distributed else [rng]
        if self.distributed:
            dist.all_gather_object(rngs, rng)
        if self.is_main:
            saved = {"optimizer": optim_state, "scheduler": scheduler.state_dict()}
            extra = self.objective.extra_state()
            if extra:
                saved["objective"] = extra
            ckpt.write_checkpoint(self.out, step, model_state, saved, rngs, state, keep=self.config.run.keep_checkpoints)
        self._barrier()

    def _export(self) -> Path:
        """The trained weights, written by the objective (RUN/model)."""
        model_state, _ = self._full_state(None)
        out = self.objective.export(model_state, self.out, self.world) if self.is_main else self.out / "model"
        self._barrier()
        return out

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
            self.objective.prepare(self.out)
        self._barrier()
        self.model = self._wrap(self.objective.build(self.out, self.device)).train()

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
                step = self._run_phase(p_index, step, found if phase_state else None, phase_state, metrics_file, writer)
        finally:
            if metrics_file:
                metrics_file.close()
            if writer:
                writer.close()
        out = self._export()
        if self.distributed:
            dist.destroy_process_group()
        return out

    def _run_phase(self, p_index: int, step: int, found: Path | None, resume_state: dict | None, metrics_file, writer) -> int:
        cfg, phase, objective = self.config, self.config.phases[p_index], self.objective
        model = self.model
        names = objective.trainable(model, phase)
        if self.is_main:
            n = sum(p.numel() for p in model.parameters() if p.requires_grad)
            log.info("phase %s: %d trainable tensors, %.2fM parameters, %d steps", phase.name, len(names), n / 1e6, phase.steps)
        optimizer = torch.optim.AdamW(
            objective.param_groups(model, cfg.optim.weight_decay), lr=phase.lr, betas=cfg.optim.betas, eps=cfg.optim.eps,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, phase))
        phase_step = 0
        if resume_state is not None and found is not None:
            phase_step = resume_state["phase_step"]
            # a checkpoint taken at a phase boundary holds the previous phase's optimizer
            self._load_state(found, optimizer if phase_step else None, scheduler if phase_step else None)
            if self.is_main:
                log.info("resumed from %s (step %d, phase %s step %d)", found.name, step, phase.name, phase_step)

        data = objective.stream(model, p_index, phase, seed=cfg.run.seed + 1000 * p_index)
        accum, world = cfg.run.accumulation, self.world
        per_step = accum * world
        batches = data.batches(phase_step * per_step + self.rank, world)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self._use_bf16() else contextlib.nullcontext()
        trainable = [p for p in model.parameters() if p.requires_grad]
        bar = self._progress(phase, phase_step)
        try:
            while phase_step < phase.steps:
                t0 = time.perf_counter()
                once = objective.begin_step(model, phase, phase_step)
                logs = []
                for _ in range(accum):
                    batch = next(batches).to(self.device)
                    with autocast:
                        loss, figures = objective.loss(model, batch, phase)
                    (loss / accum).backward()
                    logs.append(figures)
                grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf"))
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                phase_step += 1
                step += 1

                row = self._reduce_logs(logs)
                for k in objective.COUNTS:  # mean per micro-batch -> per step
                    row[k] = int(round(row[k] * per_step))
                if hasattr(grad_norm, "full_tensor"):
                    grad_norm = grad_norm.full_tensor()
                row.update(step=step, phase=phase.name, phase_step=phase_step, lr=lr, grad_norm=float(grad_norm),
                           seconds=time.perf_counter() - t0, **data.counters())
                row.update(once)
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
                                 **data.position(position), "world_size": world}
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
