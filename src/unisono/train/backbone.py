"""The backbone's stages as a Trainer objective: align, pretrain, cooldown, sft-asr, mtp.

    StageConfig ─► RUN/init: the starting model (fresh, or the previous stage's), with the
                   vocabulary expansion; written once, so every process and every resume starts
                   from the same weights
      each phase: its parameter patterns (a frozen encoder stays frozen), AdamW groups where
                  norms, biases and embeddings do not decay, the task mix's micro-batch stream
                  (`unisono.train.data`), the main / MTP / CTC losses, the router coefficient
      ─► RUN/model: a unisono checkpoint directory whose meta records the stage

On a pretrained base (`model.init: pretrained`) RUN/init and RUN/model store only what is not the
base's (unisono.model.delta), and a resume checkpoint only the parameters some phase trains (the
rest is RUN/init's): the LoRA adapters and the adaptor are a few MB where the whole SmolLM2-135M is
540. The vocabulary tables train on their new rows only ("new_rows"), so they and their AdamW
moments are stored from the base's row count on (the base rows' moments are exactly zero).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from unisono.train.config import PhaseConfig, StageConfig
from unisono.train.trainer import Objective


def router_coef(step: int, phase: PhaseConfig) -> float | None:
    """The router aux-loss coefficient at a step: annealed linearly across the phase."""
    if phase.router_aux_coef is None:
        return None
    start, end = phase.router_aux_coef
    return start + (end - start) * step / max(1, phase.steps - 1)


class BackboneObjective(Objective):
    COUNTS = ("tokens",)

    def __init__(self, config: StageConfig):
        self.config = config
        self._corpus = None
        self.base: Any = None

    @property
    def corpus(self):
        from unisono.train.data import Corpus

        if self._corpus is None:
            self._corpus = Corpus.load(self.config.data.train)
        return self._corpus

    def prepare(self, run: Path) -> None:
        from unisono.train import checkpoint as ckpt
        from unisono.train.model_setup import expand_speech_vocabulary, initial_model

        self.corpus  # noqa: B018 (bad manifests are reported before anything is built)
        init_dir = run / "init"
        if not (init_dir / "config.json").is_file():
            ckpt.seed_everything(self.config.run.seed)
            model = initial_model(self.config.model, self.corpus.texts())
            if self.config.model.speech_tokens is not None:
                expand_speech_vocabulary(model, self.config.model.speech_tokens)
            model.save(init_dir)

    def build(self, run: Path, device: torch.device):
        from unisono.model.unisono import Unisono

        self.corpus  # noqa: B018
        self.base = Unisono.load(run / "init")
        if self.base.base_vocab_rows is not None and self.config.run.precision == "bf16":
            self._frozen_to_bf16(self.base)
        return self.base

    def _frozen_to_bf16(self, model) -> None:
        """Under bf16, the frozen base and encoder are held in bf16: autocast would cast every frozen
        weight again at every matmul (it caches only casts of weights that train), which on a CPU
        costs more than the matmul. What some phase trains stays float32."""
        from unisono.model.delta import is_base_weight
        from unisono.train.model_setup import NEW_ROWS, trained_names

        keep = set(trained_names(model, self.config.phases))
        if any(NEW_ROWS in p.trainable for p in self.config.phases):
            keep |= {"decoder." + name for _, name, _ in _tables(model)}
        for name, p in model.named_parameters():
            frozen_encoder = name.startswith("encoder.") and model.config.encoder.frozen
            if name not in keep and (frozen_encoder or is_base_weight(model, name)):
                p.data = p.data.to(torch.bfloat16)

    def shard_units(self, model) -> list[torch.nn.Module]:
        return list(model.decoder.model.layers)

    def trainable(self, model, phase: PhaseConfig) -> list[str]:
        from unisono.train.model_setup import set_trainable

        return set_trainable(model, phase.trainable, encoder_frozen=model.config.encoder.frozen)

    def checkpoint_state(self, model, model_state, optim_state):
        if model.base_vocab_rows is None:
            return model_state, optim_state
        from unisono.train.model_setup import NEW_ROWS, trained_names

        keep = set(trained_names(model, self.config.phases))
        out = {k: v for k, v in model_state.items() if k in keep}
        if any(NEW_ROWS in p.trainable for p in self.config.phases):
            for key, name, _ in _tables(model):
                out[key] = model_state["decoder." + name][model.base_vocab_rows:].clone()
        if optim_state is not None:
            optim_state = _map_table_moments(model, optim_state, lambda t: t[model.base_vocab_rows:].clone())
        return out, optim_state

    def restore_state(self, model, model_state, optim_state):
        if model.base_vocab_rows is None:
            return model_state, optim_state, True
        model_state = dict(model_state)
        current = model.state_dict()
        for key, name, _ in _tables(model):
            rows = model_state.pop(key, None)
            if rows is not None:
                table = current["decoder." + name].clone()
                table[model.base_vocab_rows:] = rows
                model_state["decoder." + name] = table
        if optim_state is not None:
            def pad(t):
                return torch.cat([t.new_zeros((model.base_vocab_rows, *t.shape[1:])), t])

            optim_state = _map_table_moments(model, optim_state, pad)
        return model_state, optim_state, False

    def param_groups(self, model, weight_decay: float) -> list[dict]:
        from unisono.train.model_setup import param_groups

        return param_groups(model, weight_decay)

    def stream(self, model, phase_index: int, phase: PhaseConfig, seed: int):
        from unisono.train.data import StageData

        return StageData(self.corpus, model.vocab, self.config.data, tasks=phase.tasks, seed=seed,
                         n_mels=model.config.encoder.n_mels, adaptor_stride=model.config.adaptor.stride)

    def begin_step(self, model, phase: PhaseConfig, phase_step: int) -> dict[str, float]:
        coef = router_coef(phase_step, phase)
        if coef is None:
            return {}
        model.config.decoder.router_aux_loss_coef = coef
        return {"router_aux_coef": coef}

    def loss(self, model, batch, phase: PhaseConfig):
        out = model(batch, main=phase.main_loss, mtp=phase.mtp_loss, ctc_weight=phase.ctc_weight)
        return out.loss, {**out.logs, "tokens": float(batch.attention_mask.sum())}

    def export(self, model_state: dict, run: Path, processes: int) -> Path:
        """RUN/model: the trained weights in a plain unisono checkpoint directory."""
        from unisono.model.unisono import Unisono

        cfg = self.config
        base = Unisono.load(run / "init") if processes > 1 else self.base  # sharded parameters: fill a plain copy
        missing, unexpected = base.load_state_dict(model_state, strict=False)
        if unexpected or [k for k in missing if not k.startswith("encoder.")]:
            raise RuntimeError(f"trained state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        if base.mtp is not None and base.mtp.draft_ids is not None and any(p.mtp_loss for p in cfg.phases):
            from unisono.train.model_setup import set_draft_vocabulary

            set_draft_vocabulary(base, self.corpus.texts())
        stages = list(base.config.meta.get("stages", []))
        stages.append({
            "stage": cfg.stage,
            "phases": [{"name": p.name, "steps": p.steps, "lr": p.lr, "trainable": p.trainable} for p in cfg.phases],
            "data": list(cfg.data.train),
            "tasks": dict(cfg.data.tasks),
            "processes": processes,
        })
        base.config.meta["stages"] = stages
        base.save(run / "model")
        return run / "model"


def _tables(model):
    from unisono.model.delta import _vocabulary_tables

    return _vocabulary_tables(model)


def _map_table_moments(model, optim_state: dict, fn) -> dict:
    """AdamW's moments of the vocabulary tables passed through `fn` (the other entries as they are)."""
    names = {"decoder." + n for n, p in model.decoder.named_parameters(remove_duplicate=False)
             if any(p is t for _, _, t in _tables(model))}
    state = {}
    for key, entry in optim_state["state"].items():
        if key in names:
            entry = {k: (fn(v) if isinstance(v, torch.Tensor) and v.dim() == 2 else v) for k, v in entry.items()}
        state[key] = entry
    return {**optim_state, "state": state}


def model_at_checkpoint(run: str | Path, checkpoint: str | Path | None = None):
    """The model of a backbone run at one of its resume checkpoints (default: the latest), e.g. to
    evaluate a run that is still training: RUN/init with the checkpoint's trained parameters."""
    import yaml

    from unisono.model.unisono import Unisono
    from unisono.train import checkpoint as ckpt

    run = Path(run)
    found = Path(checkpoint) if checkpoint else ckpt.latest_checkpoint(run)
    if found is None:
        raise FileNotFoundError(f"{run} holds no checkpoint yet")
    objective = BackboneObjective(StageConfig.from_dict(yaml.safe_load((run / "config.yaml").read_text())))
    model = Unisono.load(run / "init")
    state, _, complete = objective.restore_state(model, ckpt.load_tensors(found, "model.pt"), None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or (complete and [k for k in missing if not k.startswith("encoder.")]):
        raise ValueError(f"{found} does not fit {run / 'init'}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.config.meta["checkpoint"] = {"run": str(run), "step": ckpt.read_state(found)["step"]}
    return model
