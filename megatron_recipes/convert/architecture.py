"""Hugging Face `config.json` <-> the recipes' `ModelConfig`, for LLaMA-layout checkpoints.

Two families share the layout: `LlamaForCausalLM` (no biases) and `Qwen2ForCausalLM` (the same
decoder with biases on the query, key and value projections, megatron's `add_qkv_bias`). An
exported checkpoint is a Qwen2 model exactly when its `model.add_qkv_bias` is set.

Reads both spellings of the rotary settings: transformers 4.x (`rope_theta`, `rope_scaling`) and
5.x (`rope_parameters: {rope_theta, rope_type}`). What the recipes' model cannot represent is
refused with one line naming the field: another architecture, LLaMA biases (`attention_bias`,
`mlp_bias`), Qwen2's sliding-window attention, an activation other than SiLU, a head size other
than hidden/heads, and rotary scaling (linear, dynamic, yarn, llama3...), since megatron's
GPTModel here is built with plain RoPE of base `rope_theta`.

Pure JSON work (no torch): `ModelConfig.validate()` calls `adopt_hf_architecture` when
`model.init_from_hf` is set, before any process group exists. Cost: reading one small file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack_common.errors import ConfigError

CAUSAL_LM = "LlamaForCausalLM"
QWEN2_CAUSAL_LM = "Qwen2ForCausalLM"
# The Hugging Face classes a LLaMA-layout model converts to and from. Besides the language model,
# the two score heads of reward models (megatron_recipes/reward_models): one bias-free scalar per
# position (`score`, megatron's `reward_head`), pooled at the last non-padding token
# (LlamaForSequenceClassification: outcome reward models) or read at every token
# (LlamaForTokenClassification with token_classification_bias=false: process reward models, values).
SEQUENCE_CLASSIFICATION = "LlamaForSequenceClassification"
TOKEN_CLASSIFICATION = "LlamaForTokenClassification"
SCORE_HEAD_ARCHITECTURES = (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION)
# Architecture name -> model_type; Qwen2 adds biases to the q/k/v projections (add_qkv_bias).
FAMILIES = {
    CAUSAL_LM: "llama",
    QWEN2_CAUSAL_LM: "qwen2",
    SEQUENCE_CLASSIFICATION: "llama",
    TOKEN_CLASSIFICATION: "llama",
}
SUPPORTED_ARCHITECTURES = tuple(FAMILIES)
SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
CONFIG_FILE = "config.json"
# Fields a converted checkpoint's architecture is made of (ModelConfig names).
ARCHITECTURE_FIELDS = (
    "num_layers",
    "hidden_size",
    "ffn_hidden_size",
    "num_attention_heads",
    "num_query_groups",
    "vocab_size",
    "max_position_embeddings",
    "rotary_base",
    "norm_epsilon",
    "untie_embeddings_and_output_weights",
    "add_qkv_bias",
)


class ConversionError(ConfigError):
    """A checkpoint that cannot be converted: the message names the file, tensor or field.

    A ConfigError, so entry points print it as one line and exit with status 2."""


@dataclass(frozen=True)
class HFArchitecture:
    """The sizes of a LLaMA-layout model, in Hugging Face terms."""

    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    max_position_embeddings: int
    rotary_base: float
    norm_epsilon: float
    tie_word_embeddings: bool
    # Biases on the query, key and value projections: Qwen2ForCausalLM (False: LlamaForCausalLM).
    qkv_bias: bool = False
    # The head: the language model's (CAUSAL_LM, whichever family) or a reward model's score head.
    hf_class: str = CAUSAL_LM

    @property
    def has_score_head(self) -> bool:
        return self.hf_class in SCORE_HEAD_ARCHITECTURES

    @property
    def architecture_name(self) -> str:
        """The Hugging Face class an export writes."""
        if self.has_score_head:
            return self.hf_class
        return QWEN2_CAUSAL_LM if self.qkv_bias else CAUSAL_LM

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def heads_per_group(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    def model_config_fields(self) -> dict[str, Any]:
        """The ModelConfig fields this architecture fixes (the rest are training choices)."""
        return {
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "ffn_hidden_size": self.ffn_hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "num_query_groups": None
            if self.num_key_value_heads == self.num_attention_heads
            else self.num_key_value_heads,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "rotary_base": self.rotary_base,
            "norm_epsilon": self.norm_epsilon,
            "untie_embeddings_and_output_weights": not self.tie_word_embeddings,
            "add_qkv_bias": self.qkv_bias,
        }

    @classmethod
    def from_model_config(cls, fields: dict[str, Any]) -> "HFArchitecture":
        """From a megatron checkpoint's `model_config` record (ModelConfig fields + vocab_size, and
        `hf_class` for a reward model's checkpoint)."""
        # num_query_groups may be absent (null), add_qkv_bias too (checkpoints from before Qwen2 support).
        optional = ("num_query_groups", "add_qkv_bias")
        missing = [name for name in ARCHITECTURE_FIELDS if name not in fields and name not in optional]
        if missing or fields.get("vocab_size") is None:
            raise ConversionError(f"the checkpoint's model_config lacks {', '.join(missing or ['vocab_size'])}")
        heads = int(fields["num_attention_heads"])
        return cls(
            num_layers=int(fields["num_layers"]),
            hidden_size=int(fields["hidden_size"]),
            ffn_hidden_size=int(fields["ffn_hidden_size"]),
            num_attention_heads=heads,
            num_key_value_heads=int(fields.get("num_query_groups") or heads),
            vocab_size=int(fields["vocab_size"]),
            max_position_embeddings=int(fields["max_position_embeddings"]),
            rotary_base=float(fields["rotary_base"]),
            norm_epsilon=float(fields["norm_epsilon"]),
            tie_word_embeddings=not bool(fields["untie_embeddings_and_output_weights"]),
            qkv_bias=bool(fields.get("add_qkv_bias", False)),
            hf_class=str(fields.get("hf_class") or CAUSAL_LM),
        )


def read_hf_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed config.json of an HF model directory."""
    path = Path(directory) / CONFIG_FILE
    if not Path(directory).is_dir():
        raise ConversionError(f"{directory} is not a directory (expected an HF model directory with config.json)")
    if not path.is_file():
        raise ConversionError(f"{path} does not exist: not a Hugging Face model directory")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConversionError(f"{path} is not readable JSON: {error}") from None
    if not isinstance(config, dict):
        raise ConversionError(f"{path} does not hold a JSON object")
    return config


def _rope_settings(config: dict[str, Any], where: str) -> float:
    """rope_theta, after refusing any rotary scaling."""
    parameters = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling")
    kinds = []
    if isinstance(scaling, dict):
        kinds.append((scaling.get("rope_type") or scaling.get("type") or "?", scaling))
    elif scaling is not None:
        kinds.append((str(scaling), scaling))
    if isinstance(parameters, dict) and parameters.get("rope_type", "default") != "default":
        kinds.append((parameters["rope_type"], parameters))
    for kind, details in kinds:
        if kind != "default":
            raise ConversionError(
                f"{where}: rope scaling type {kind!r} ({json.dumps(details, sort_keys=True)}) is not supported: the"
                " recipes' models use plain rotary embeddings with rope_theta only (supported: no rope_scaling, or"
                " rope_type 'default')"
            )
    theta = config.get("rope_theta", parameters.get("rope_theta") if isinstance(parameters, dict) else None)
    return float(theta if theta is not None else 10000.0)


def hf_architecture(config: dict[str, Any], source: str | os.PathLike = "config.json") -> HFArchitecture:
    """Check an HF config.json for what the converter supports and return its sizes."""
    where = f"{source}/{CONFIG_FILE}" if Path(str(source)).name != CONFIG_FILE else str(source)
    architectures = config.get("architectures") or []
    model_type = config.get("model_type")
    known = [name for name in architectures if name in FAMILIES]
    if (architectures and not known) or (model_type is not None and model_type not in SUPPORTED_MODEL_TYPES):
        raise ConversionError(
            f"{where}: architecture {architectures or model_type!r} (model_type {model_type!r}) is not supported:"
            f" the converter reads {', '.join(SUPPORTED_ARCHITECTURES)} checkpoints (model_type"
            f" {' or '.join(SUPPORTED_MODEL_TYPES)}: the layout of DeepSeek LLM / DeepSeek-Coder-v1.5 / DeepSeekMath,"
            " and Qwen2 with its q/k/v biases)"
        )
    family = FAMILIES[known[0]] if known else model_type or "llama"
    if model_type is not None and model_type != family:
        raise ConversionError(
            f"{where}: architecture {known[0]} does not match model_type {model_type!r} (expected {family!r})"
        )
    required = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [name for name in required if not isinstance(config.get(name), int) or config[name] <= 0]
    if missing:
        raise ConversionError(f"{where}: missing or non-positive {', '.join(missing)}")
    activation = config.get("hidden_act", "silu")
    if activation not in ("silu", "swish"):
        raise ConversionError(
            f"{where}: hidden_act={activation!r} is not supported (the recipes' models use SwiGLU: silu)"
        )
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            raise ConversionError(
                f"{where}: {flag}=true is not supported (the recipes' models have no biases besides Qwen2's q/k/v ones)"
            )
    if family == "qwen2" and config.get("use_sliding_window"):
        raise ConversionError(
            f"{where}: use_sliding_window=true is not supported (the recipes' models attend over the whole context)"
        )
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    hidden = config["hidden_size"]
    if hidden % heads:
        raise ConversionError(f"{where}: hidden_size={hidden} is not divisible by num_attention_heads={heads}")
    if heads % kv_heads:
        raise ConversionError(
            f"{where}: num_attention_heads={heads} is not divisible by num_key_value_heads={kv_heads}"
        )
    # The head only: a causal LM's family (LLaMA or Qwen2) is qkv_bias's to say.
    hf_class = known[0] if known and known[0] in SCORE_HEAD_ARCHITECTURES else CAUSAL_LM
    if hf_class in SCORE_HEAD_ARCHITECTURES:
        labels = config.get("num_labels") or len(config.get("id2label") or {}) or 2
        if labels != 1:
            raise ConversionError(f"{where}: num_labels={labels}: a reward model's score head has one output")
    head_dim = config.get("head_dim") or hidden // heads
    if head_dim != hidden // heads:
        raise ConversionError(
            f"{where}: head_dim={head_dim} differs from hidden_size/num_attention_heads={hidden // heads}, which the"
            " recipes' models assume"
        )
    return HFArchitecture(
        num_layers=config["num_hidden_layers"],
        hidden_size=hidden,
        ffn_hidden_size=config["intermediate_size"],
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        vocab_size=config["vocab_size"],
        max_position_embeddings=int(config.get("max_position_embeddings") or 2048),
        rotary_base=_rope_settings(config, where),
        norm_epsilon=float(config.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=family == "qwen2",
        hf_class=hf_class,
    )


def read_hf_architecture(directory: str | os.PathLike) -> HFArchitecture:
    return hf_architecture(read_hf_config(directory), directory)


def adopt_hf_architecture(model_config) -> dict[str, tuple[Any, Any]]:
    """Set a ModelConfig's architecture fields from `model_config.init_from_hf`'s config.json.

    Idempotent; returns {field: (old, new)} for the fields that changed (logged by callers)."""
    architecture = read_hf_architecture(model_config.init_from_hf)
    changes = {}
    for name, value in architecture.model_config_fields().items():
        old = getattr(model_config, name)
        if old != value:
            changes[name] = (old, value)
            setattr(model_config, name, value)
    return changes


def torch_dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


# Fields a template of the other family may lend an export (token ids, not architecture knobs).
_FAMILY_NEUTRAL_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "initializer_range", "use_cache")


def hf_config_for_export(
    architecture: HFArchitecture, dtype_name: str, template: dict[str, Any] | None = None
) -> dict[str, Any]:
    """config.json of an exported model: the template's other fields (token ids, ...) kept, the
    architecture written from the megatron checkpoint (LlamaForCausalLM, or Qwen2ForCausalLM when
    it has q/k/v biases). The rotary base is written in the template's spelling (`rope_parameters`
    for transformers 5 files, `rope_theta` otherwise)."""
    family = FAMILIES[architecture.architecture_name]
    if template and template.get("model_type") not in (None, family):
        # A template of the other family (say a LLaMA teacher's config for a Qwen2-style student):
        # keep its token ids, not its family's own fields.
        template = {key: value for key, value in template.items() if key in _FAMILY_NEUTRAL_FIELDS}
    config: dict[str, Any] = {
        "bos_token_id": None,
        "eos_token_id": None,
        "initializer_range": 0.02,
        "use_cache": True,
    }
    if template:
        config.update(
            {key: value for key, value in template.items() if key not in ("transformers_version", "_name_or_path")}
        )
    config.update(
        {
            "architectures": [architecture.architecture_name],
            "model_type": family,
            "hidden_act": "silu",
            "hidden_size": architecture.hidden_size,
            "intermediate_size": architecture.ffn_hidden_size,
            "num_hidden_layers": architecture.num_layers,
            "num_attention_heads": architecture.num_attention_heads,
            "num_key_value_heads": architecture.num_key_value_heads,
            "head_dim": architecture.head_dim,
            "vocab_size": architecture.vocab_size,
            "max_position_embeddings": architecture.max_position_embeddings,
            "rms_norm_eps": architecture.norm_epsilon,
            "tie_word_embeddings": architecture.tie_word_embeddings,
        }
    )
    if isinstance(config.get("rope_parameters"), dict):
        config["rope_parameters"] = {
            **config["rope_parameters"],
            "rope_theta": architecture.rotary_base,
            "rope_type": "default",
        }
        config.pop("rope_theta", None)
        config.pop("rope_scaling", None)
    else:
        config["rope_theta"] = architecture.rotary_base
        config["rope_scaling"] = None
    if family == "llama":
        config.update({"attention_bias": False, "mlp_bias": False})
    else:  # Qwen2's q/k/v biases are implied by its architecture; no sliding window here
        config["use_sliding_window"] = False
        if "head_dim" not in (template or {}):  # Qwen2 configs derive it from hidden/heads
            config.pop("head_dim")
        config.pop("attention_bias", None)
        config.pop("mlp_bias", None)
        if isinstance(config.get("layer_types"), list):
            config["layer_types"] = ["full_attention"] * architecture.num_layers
    if architecture.has_score_head:
        config.update(
            {
                "num_labels": 1,
                "id2label": {"0": "LABEL_0"},
                "label2id": {"LABEL_0": 0},
                "token_classification_bias": False,
            }
        )
    # Both spellings of the dtype: transformers 4 reads torch_dtype, 5 reads dtype.
    config["torch_dtype"] = dtype_name
    config["dtype"] = dtype_name
    return dict(sorted(config.items()))
