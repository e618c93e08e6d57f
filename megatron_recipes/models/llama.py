"""One LLaMA-style builder for every preset: ModelConfig -> megatron-core TransformerConfig + GPTModel.

The architecture of DeepSeek-Coder-v1.5 / DeepSeekMath and DeepSeek LLM: pre-norm RMSNorm,
SwiGLU MLP, rotary position embeddings, no biases, untied input/output embeddings,
optional grouped-query attention. Presets (conf/model/*.yaml) only change sizes.

    choice = choose_layer_spec(model, device="cuda", fp8=None)     # logged: TE or local, and why
    config = transformer_config(model, parallelism, precision="bf16")
    chunks = build_model(model, parallelism, vocab_size=102400, device="cuda")

`build_model` returns one GPTModel per virtual pipeline stage held by this rank (a list of one
without interleaving), unwrapped; `megatron_recipes.training.setup` wraps them in megatron's
DDP. `meta_device=True` builds them without memory (parameter counts of the 7B preset in tests).

Layer spec, chosen explicitly and logged:
- Transformer Engine spec (fused norm+linear, TE attention, bf16, optional FP8) when the
  process runs on CUDA and `transformer_engine` imports;
- megatron-core's local spec otherwise (always on the CPU: importing TE without CUDA breaks
  every megatron import, so it is never tried there).
Both specs produce the same checkpoint keys (the local spec maps its norms onto TE's fused
names), so checkpoints move between GPU (TE) and CPU (local) runs.

Cost: building allocates the parameters of this rank's share of the model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import (
    get_gpt_layer_local_spec,
    get_gpt_layer_with_transformer_engine_spec,
)
from megatron.core.transformer import TransformerConfig

from megatron_recipes.models.config import ModelConfig
from megatron_recipes.runtime.config import ParallelismConfig
from stack_common.errors import ConfigError

log = logging.getLogger(__name__)


def padded_vocab_size(vocab_size: int, divisible_by: int, tensor_parallel_size: int) -> int:
    """Pad the embedding rows so every TP shard has the same size (Megatron-LM's rule)."""
    multiple = divisible_by * tensor_parallel_size
    return int(math.ceil(vocab_size / multiple) * multiple)


def resolve_precision(precision: str, device: str) -> str:
    if precision == "auto":
        return "bf16" if device == "cuda" else "fp32"
    return precision


@dataclass(frozen=True)
class LayerSpecChoice:
    name: str  # transformer_engine | local
    reason: str
    spec: Any


def transformer_engine_importable() -> bool:
    """True only on a CUDA machine where `import transformer_engine` succeeds."""
    if not torch.cuda.is_available() or importlib.util.find_spec("transformer_engine") is None:
        return False
    try:
        import transformer_engine.pytorch  # noqa: F401, PLC0415  optional, CUDA-only: probed, never required
    except Exception as error:  # TE raises RuntimeError (not ImportError) when CUDA libs are missing
        log.warning("transformer_engine is installed but does not import (%s); using the local spec", error)
        return False
    return True


def choose_layer_spec(model: ModelConfig, device: str, fp8: str | None = None) -> LayerSpecChoice:
    """Pick the layer spec for `model.transformer_impl` on `device` and say why."""
    implementation = model.transformer_impl
    if implementation == "auto":
        if device != "cuda":
            implementation, reason = "local", "auto: no CUDA device, local megatron-core layers"
        elif transformer_engine_importable():
            implementation, reason = "transformer_engine", "auto: CUDA and Transformer Engine available"
        else:
            implementation, reason = "local", "auto: Transformer Engine not importable, local megatron-core layers"
    else:
        reason = f"model.transformer_impl={implementation}"
    if implementation == "transformer_engine":
        if device != "cuda" or not transformer_engine_importable():
            raise ConfigError(
                "model.transformer_impl=transformer_engine needs a CUDA device where transformer_engine imports"
            )
        spec = get_gpt_layer_with_transformer_engine_spec()
    else:
        if fp8 is not None:
            raise ConfigError("trainer.fp8 needs the Transformer Engine layer spec (CUDA + transformer_engine)")
        spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    return LayerSpecChoice(implementation, reason, spec)


def transformer_config(
    model: ModelConfig,
    parallelism: ParallelismConfig,
    precision: str = "fp32",
    fp8: str | None = None,
    device: str = "cpu",
    meta_device: bool = False,
):
    """The megatron-core TransformerConfig of a preset at a parallel layout."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    vp = parallelism.virtual_pipeline_model_parallel_size
    recompute: dict[str, Any] = {}
    if model.recompute == "selective":
        recompute = {"recompute_granularity": "selective"}
    elif model.recompute == "full":
        recompute = {
            "recompute_granularity": "full",
            "recompute_method": "uniform",
            "recompute_num_layers": model.recompute_num_layers,
        }
    on_cuda = device == "cuda"
    return TransformerConfig(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        ffn_hidden_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_query_groups=model.num_query_groups,
        normalization="RMSNorm",
        layernorm_epsilon=model.norm_epsilon,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        init_method_std=model.init_method_std,
        attention_dropout=model.attention_dropout,
        hidden_dropout=model.hidden_dropout,
        tensor_model_parallel_size=parallelism.tensor_model_parallel_size,
        pipeline_model_parallel_size=parallelism.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=vp if vp and vp > 1 else None,
        sequence_parallel=parallelism.sequence_parallel,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        fp8=fp8,
        # Loss is normalised by the tokens of the whole global batch (SFT masks vary per sample).
        calculate_per_token_loss=True,
        # Fused kernels need CUDA (and some Apex/TE); the unfused paths compute the same thing.
        bias_activation_fusion=on_cuda,
        masked_softmax_fusion=on_cuda,
        bias_dropout_fusion=on_cuda,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        cross_entropy_loss_fusion=False,
        persist_layer_norm=False,
        # Meta tensors have no data to initialise; on the CPU, full-size init then split keeps
        # the initial weights the same at every TP size.
        use_cpu_initialization=meta_device or not on_cuda,
        perform_initialization=not meta_device,
        deallocate_pipeline_outputs=True,
        cuda_graph_scope=[],  # megatron's own default ("full") only triggers a deprecation warning
        **recompute,
    )


def build_model(
    model: ModelConfig,
    parallelism: ParallelismConfig,
    vocab_size: int,
    device: str = "cpu",
    precision: str = "fp32",
    fp8: str | None = None,
    meta_device: bool = False,
    layer_spec: LayerSpecChoice | None = None,
) -> list:
    """GPTModel chunks of this rank (one per virtual pipeline stage). Parallel groups must exist."""
    config = transformer_config(model, parallelism, precision, fp8, device, meta_device)
    choice = layer_spec or choose_layer_spec(model, device, fp8)
    log.info("layer spec: %s (%s)", choice.name, choice.reason)
    padded = padded_vocab_size(vocab_size, model.make_vocab_size_divisible_by, parallelism.tensor_model_parallel_size)
    virtual_stages = config.virtual_pipeline_model_parallel_size or 1
    chunks = []
    placement = torch.device("meta") if meta_device else contextlib.nullcontext()
    with placement:
        for stage in range(virtual_stages):
            vp_stage = stage if virtual_stages > 1 else None
            chunk = GPTModel(
                config=config,
                transformer_layer_spec=choice.spec,
                vocab_size=padded,
                max_sequence_length=model.max_position_embeddings,
                pre_process=parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage),
                post_process=parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage),
                share_embeddings_and_output_weights=not model.untie_embeddings_and_output_weights,
                position_embedding_type="rope",
                rotary_base=model.rotary_base,  # a float: a fractional RoPE theta (HF rope_theta) stays exact
                vp_stage=vp_stage,
            )
            if device == "cuda" and not meta_device:
                chunk.cuda(torch.cuda.current_device())
            chunks.append(chunk)
    return chunks


def parameter_count(chunks: list, tied_counted_once: bool = True) -> int:
    """Parameters held by these chunks (this rank's share)."""
    seen: set[int] = set()
    total = 0
    for chunk in chunks:
        for parameter in chunk.parameters():
            if tied_counted_once and id(parameter) in seen:
                continue
            seen.add(id(parameter))
            total += parameter.numel()
    return total


def architecture_parameter_count(model: ModelConfig, vocab_size: int) -> int:
    """Parameters of the whole model from its sizes (unpadded vocabulary)."""
    h, f, layers = model.hidden_size, model.ffn_hidden_size, model.num_layers
    head_dim = h // model.num_attention_heads
    kv = (model.num_query_groups or model.num_attention_heads) * head_dim
    per_layer = h * (h + 2 * kv) + h * h + 3 * h * f + 2 * h  # qkv, out, gated MLP, 2 norms
    embeddings = vocab_size * h * (2 if model.untie_embeddings_and_output_weights else 1)
    return layers * per_layer + embeddings + h  # + final norm


def training_flops_per_token(model: ModelConfig, vocab_size: int, seq_length: int) -> float:
    """Model FLOPs of one training token (forward + backward = 3x forward), as in PaLM's MFU:
    6 x (matmul parameters, logits included) + 12 x layers x hidden x seq_length for attention
    scores and values (no discount for the causal mask). Recompute is not counted (MFU, not HFU)."""
    h, f, layers = model.hidden_size, model.ffn_hidden_size, model.num_layers
    head_dim = h // model.num_attention_heads
    kv = (model.num_query_groups or model.num_attention_heads) * head_dim
    matmul_parameters = layers * (h * (h + 2 * kv) + h * h + 3 * h * f) + vocab_size * h
    return 6.0 * matmul_parameters + 12.0 * layers * h * seq_length
