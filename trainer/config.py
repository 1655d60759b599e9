"""The training configuration: one checked dataclass, defaults = the published recipe.

Precedence is defaults < config file (YAML or JSON) < command-line flags::

    cfg = TrainConfig.from_sources(config_file="recipe.yaml", overrides={"max_steps": 30})

Every field has a ``help`` string; the CLI builds its flags from the fields, in
kebab-case (``--model-id``) and in the published launcher's snake_case
(``--model_id``). ``validate()`` (run by ``__post_init__``) collects every
problem before raising one ``ConfigError``.
"""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from kinetics_prep.sampling import SAMPLING_METHODS
from trainer.errors import ConfigError

SOFT_TOKEN_BUDGETS = (70, 140, 280, 560, 1120)
OPTIMIZERS = (
    "paged_adamw_8bit",
    "adamw_8bit",
    "adamw_torch",
    "adamw_torch_fused",
    "sgd",
    "adafactor",
)
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts")
DECODERS = ("auto", "decord", "pyav", "opencv")

# q/k/v/o/gate/up/down of the text decoder layers only. The vision and audio
# towers have modules with the same short names (Gemma4ClippableLinear) that
# PEFT cannot wrap, so a plain list of names is not enough.
DEFAULT_LORA_TARGET = (
    r".*language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)"
    r"|mlp\.(gate_proj|up_proj|down_proj))"
)


def _f(default: Any, help: str, **meta: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(
            default_factory=lambda: type(default)(default), metadata={"help": help, **meta}
        )
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class TrainConfig:
    """Everything `kprep train` needs. Defaults are the published Gemma 4 E4B recipe."""

    # --- model and data -------------------------------------------------------------
    model_id: str = _f(
        "google/gemma-4-e4b-it",
        "Base model: a Hub id or a local folder (Gemma4ForConditionalGeneration + processor).",
    )
    data_path: str | None = _f(
        None,
        "Training data: a seed-format manifest JSON (kprep build-manifest) or an Arrow dataset folder.",
    )
    image_folder: str | None = _f(
        None,
        "Root that image/video paths in the manifest are relative to (default: the manifest's folder).",
    )
    split: str = _f("train", "Split to train on when --data-path is an Arrow DatasetDict.")
    max_samples: int | None = _f(None, "Use only the first N samples (quick runs, tests).")
    output_dir: str = _f(
        "outputs/gemma4-kinetics-lora", "Where checkpoints, the adapter and the summary go."
    )
    # --- schedule ---------------------------------------------------------------------
    num_train_epochs: float = _f(3.0, "Epochs over the data (ignored when --max-steps > 0).")
    max_steps: int = _f(-1, "Stop after this many optimizer steps (-1: use --num-train-epochs).")
    per_device_train_batch_size: int = _f(1, "Samples per device per micro-step.")
    gradient_accumulation_steps: int = _f(8, "Micro-steps per optimizer step.")
    learning_rate: float = _f(
        2e-4,
        "Peak learning rate of the LoRA / text parameters (--no-use-lora: 0 freezes the text "
        "layers, e.g. to train only --embedding-lr / --projector-lr).",
    )
    lr_scheduler_type: str = _f("cosine", f"LR schedule: {', '.join(SCHEDULERS)}.")
    warmup_ratio: float = _f(0.03, "Fraction of the steps spent warming up the LR.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0 disables).")
    optim: str = _f("paged_adamw_8bit", f"Optimizer (transformers names): {', '.join(OPTIMIZERS)}.")
    seed: int = _f(42, "Random seed (data order, LoRA init, dropout).")
    # --- precision and memory ----------------------------------------------------------
    bf16: bool = _f(True, "bfloat16 mixed precision (switched off with a note on a CPU).")
    gradient_checkpointing: bool = _f(True, "Recompute activations in backward to save memory.")
    attn_implementation: str = _f("sdpa", "Attention kernel: sdpa or eager.")
    # --- what trains --------------------------------------------------------------------
    use_lora: bool = _f(True, "Train LoRA adapters; --no-use-lora fine-tunes the text model fully.")
    lora_r: int = _f(16, "LoRA rank.")
    lora_alpha: int = _f(32, "LoRA alpha (scale = alpha / r).")
    lora_dropout: float = _f(0.05, "Dropout on the LoRA input.")
    lora_target_modules: str = _f(
        DEFAULT_LORA_TARGET, "Regex (full module name) of the Linear layers that get LoRA."
    )
    image_encoder_lr: float = _f(
        0.0, "> 0 unfreezes the vision tower with this learning rate (own parameter group)."
    )
    projector_lr: float = _f(
        0.0, "> 0 unfreezes the vision->text projector with this learning rate (own group)."
    )
    embedding_lr: float | None = _f(
        None,
        "--no-use-lora: learning rate of the token embeddings (embed_tokens, "
        "embed_tokens_per_layer; the LM head is tied to them), own group; default "
        "--learning-rate, 0 freezes them. LoRA keeps them frozen.",
    )
    # --- inputs -----------------------------------------------------------------------
    max_soft_tokens: int | None = _f(
        None,
        f"Vision soft tokens per image / video frame: one of {SOFT_TOKEN_BUDGETS} "
        "(default: the processor's own, 280 for Gemma 4 images).",
    )
    num_frames: int = _f(4, "Frames decoded from each raw-video ({'type': 'video'}) entry.")
    frame_sampling: str = _f(
        "center", f"Frame sampling for raw video: {', '.join(SAMPLING_METHODS)}."
    )
    decoder: str = _f("auto", f"Video decoder for raw video: {', '.join(DECODERS)}.")
    dataloader_num_workers: int = _f(0, "DataLoader worker processes (decode in parallel).")
    torch_threads: int | None = _f(
        None,
        "CPU threads for torch ops (default: torch's own). On a small shared CPU, 1 can be "
        "many times faster than 2.",
    )
    # --- checkpoints and logging -------------------------------------------------------
    save_steps: int = _f(200, "Save a checkpoint every N optimizer steps.")
    save_total_limit: int = _f(2, "Keep at most N checkpoints.")
    logging_steps: int = _f(10, "Log the loss every N optimizer steps.")
    resume: bool = _f(False, "Continue from the newest checkpoint in --output-dir.")
    report_to: str = _f("none", "Trackers for transformers (none, tensorboard, wandb, ...).")
    # --- scale ------------------------------------------------------------------------
    deepspeed: str | None = _f(
        None,
        "DeepSpeed config JSON; 'zero2' (or an empty value) uses the packaged ZeRO-2 config.",
    )
    num_gpus: int | None = _f(
        None, "Launch through the deepspeed launcher on this many GPUs per node."
    )
    hostfile: str | None = _f(None, "Multi-node: deepspeed hostfile (implies the launcher).")
    local_rank: int = _f(-1, "Set by the deepspeed launcher; do not pass by hand.", hidden=True)

    def __post_init__(self) -> None:
        self.validate()

    # --- checks -----------------------------------------------------------------------
    def validate(self) -> None:
        p: list[str] = []

        def flag(name: str) -> str:
            return "--" + name.replace("_", "-")

        def need(cond: bool, name: str, rule: str) -> None:
            if not cond:
                p.append(f"{flag(name)} ({getattr(self, name)!r}) {rule}")

        need(bool(self.model_id), "model_id", "must name a model id or folder")
        need(bool(self.output_dir), "output_dir", "must be a folder path")
        need(self.max_samples is None or self.max_samples >= 1, "max_samples", "must be >= 1")
        need(self.num_train_epochs > 0, "num_train_epochs", "must be > 0")
        need(self.max_steps == -1 or self.max_steps >= 1, "max_steps", "must be -1 or >= 1")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "lora_r"):
            need(getattr(self, name) >= 1, name, "must be >= 1")
        need(self.lora_alpha >= 1, "lora_alpha", "must be >= 1")
        if self.use_lora:
            need(self.learning_rate > 0, "learning_rate", "must be > 0 with LoRA")
        else:
            need(self.learning_rate >= 0, "learning_rate", "must be >= 0")
        if self.embedding_lr is not None:
            need(self.embedding_lr >= 0, "embedding_lr", "must be >= 0")
            need(
                not self.use_lora or self.embedding_lr == 0,
                "embedding_lr",
                "needs --no-use-lora (LoRA keeps the embeddings frozen)",
            )
        if not self.use_lora:
            emb = self.learning_rate if self.embedding_lr is None else self.embedding_lr
            need(
                max(self.learning_rate, emb, self.image_encoder_lr, self.projector_lr) > 0,
                "learning_rate",
                "is 0 and so are --embedding-lr, --image-encoder-lr and --projector-lr: "
                "nothing would train",
            )
        need(
            self.lr_scheduler_type in SCHEDULERS,
            "lr_scheduler_type",
            f"must be one of {SCHEDULERS}",
        )
        need(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0")
        need(self.optim in OPTIMIZERS, "optim", f"must be one of {OPTIMIZERS}")
        need(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        try:
            re.compile(self.lora_target_modules)
        except re.error as exc:
            p.append(f"--lora-target-modules ({self.lora_target_modules!r}) is not a regex: {exc}")
        need(self.image_encoder_lr >= 0, "image_encoder_lr", "must be >= 0")
        need(self.projector_lr >= 0, "projector_lr", "must be >= 0")
        need(
            self.max_soft_tokens is None or self.max_soft_tokens in SOFT_TOKEN_BUDGETS,
            "max_soft_tokens",
            f"must be one of {SOFT_TOKEN_BUDGETS}",
        )
        need(self.num_frames >= 1, "num_frames", "must be >= 1")
        need(
            self.frame_sampling in SAMPLING_METHODS,
            "frame_sampling",
            f"must be one of {SAMPLING_METHODS}",
        )
        need(self.decoder in DECODERS, "decoder", f"must be one of {DECODERS}")
        need(self.dataloader_num_workers >= 0, "dataloader_num_workers", "must be >= 0")
        need(self.torch_threads is None or self.torch_threads >= 1, "torch_threads", "must be >= 1")
        need(self.save_steps >= 1, "save_steps", "must be >= 1")
        need(self.save_total_limit >= 1, "save_total_limit", "must be >= 1")
        need(self.logging_steps >= 1, "logging_steps", "must be >= 1")
        need(
            self.attn_implementation in ("sdpa", "eager"),
            "attn_implementation",
            "must be sdpa or eager",
        )
        need(self.num_gpus is None or self.num_gpus >= 1, "num_gpus", "must be >= 1")
        if p:
            raise ConfigError("invalid training config: " + "; ".join(p))

    # --- construction -----------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        out = {}
        for f in fields(cls):
            if f.default is not MISSING:
                out[f.name] = f.default
            elif f.default_factory is not MISSING:  # type: ignore[misc]
                out[f.name] = f.default_factory()  # type: ignore[misc]
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from a mapping whose keys may be snake_case or kebab-case."""
        known = set(cls.field_names())
        clean: dict[str, Any] = {}
        unknown = []
        for key, value in values.items():
            name = str(key).lstrip("-").replace("-", "_")
            if name not in known:
                unknown.append(str(key))
                continue
            clean[name] = value
        if unknown:
            raise ConfigError(
                f"{source}: unknown setting(s) {', '.join(sorted(unknown))}; "
                f"see `kprep train --help` for the names"
            )
        return cls(**_coerce(cls, clean, source))

    @classmethod
    def from_sources(
        cls, *, config_file: str | Path | None = None, overrides: dict[str, Any] | None = None
    ) -> TrainConfig:
        """defaults < config file < overrides (``None`` values in overrides mean "not given")."""
        merged: dict[str, Any] = {}
        if config_file is not None:
            merged.update(_normalise_keys(load_config_file(config_file)))
        merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(merged, source=str(config_file) if config_file else "flags")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _normalise_keys(values: dict[str, Any]) -> dict[str, Any]:
    return {str(k).lstrip("-").replace("-", "_"): v for k, v in values.items()}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or JSON (.json) mapping of settings."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found: pass an existing .yaml or .json file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {path}: unknown extension; use .yaml, .yml or .json")
    except (ValueError, ImportError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"config file {path} does not parse: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of setting: value")
    return data


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(cls: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    """Convert strings from files to the field types; collect type problems."""
    problems = []
    types = {f.name: str(f.type) for f in fields(cls)}
    out = {}
    for name, value in values.items():
        kind = types[name]
        try:
            if value is None:
                out[name] = None
            elif kind.startswith("bool"):
                if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                    value = value.lower() in _TRUE
                if not isinstance(value, bool):
                    raise ValueError("must be true or false")
                out[name] = value
            elif kind.startswith("int"):
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError("must be an integer")
                out[name] = int(value)
            elif kind.startswith("float"):
                if isinstance(value, bool):
                    raise ValueError("must be a number")
                out[name] = float(value)
            else:
                out[name] = str(value)
        except (TypeError, ValueError) as exc:
            msg = str(exc) if "must" in str(exc) else f"must be of type {kind}"
            problems.append(f"{name} ({value!r}) {msg}")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return out


def packaged_config(name: str) -> Path:
    """Path of a config file shipped in ``trainer/configs/`` (e.g. ``zero2.json``)."""
    from importlib import resources

    path = Path(str(resources.files("trainer") / "configs" / name))
    if not path.is_file():
        raise ConfigError(f"packaged config {name} not found in {path.parent}")
    return path
