"""The `model` section: a LLaMA-style decoder's architecture. Its defaults are the `tiny` model the
CPU runs and tests use (conf/model/tiny.yaml adds nothing to them); the published architectures
are presets in conf/model/."""

from __future__ import annotations

from dataclasses import dataclass

from megatron_recipes.convert.architecture import adopt_hf_architecture
from stack_common.checks import require_choice, require_positive, require_range
from stack_common.errors import ConfigError

TRANSFORMER_IMPLEMENTATIONS = ("auto", "local", "transformer_engine")
RECOMPUTE_MODES = ("none", "selective", "full")


@dataclass
class ModelConfig:
    """A LLaMA-style decoder (RMSNorm, SwiGLU, RoPE, no biases); presets in conf/model/.

    Built by `megatron_recipes.models.build_model` into a megatron-core TransformerConfig and
    GPTModel. `vocab_size: null` takes the tokenizer's size (data.tokenizer); the embedding is
    padded to a multiple of `make_vocab_size_divisible_by x TP` as Megatron-LM does.
    """

    name: str = "tiny"
    # 4 layers so that PP=2 with 2 virtual stages has one layer per chunk.
    num_layers: int = 4
    hidden_size: int = 64
    ffn_hidden_size: int = 176
    num_attention_heads: int = 4
    # Grouped-query attention: number of key/value heads; null = one per attention head.
    num_query_groups: int | None = None
    vocab_size: int | None = None
    make_vocab_size_divisible_by: int = 128
    # Context length the model supports (RoPE tables); data.seq_length must not exceed it.
    max_position_embeddings: int = 1024
    # RoPE theta; fractional values (some HF models use them) reach megatron unchanged.
    rotary_base: float = 10000.0
    norm_epsilon: float = 1e-6
    untie_embeddings_and_output_weights: bool = True
    init_method_std: float = 0.02
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0
    # auto: Transformer Engine layers on a CUDA machine where TE imports, megatron-core's local
    # layers otherwise (the choice is logged); local / transformer_engine force one.
    transformer_impl: str = "auto"
    # Activation recompute: none, selective (attention core) or full (recompute_num_layers per
    # uniform block).
    recompute: str = "none"
    recompute_num_layers: int = 1
    # A Hugging Face LLaMA-layout model directory (config.json + safetensors). When set, the
    # architecture fields above come from its config.json (validate() adopts them) and a fresh
    # run starts from its weights, read straight into the run's own TP/PP layout
    # (convert.hf_to_megatron.load_hf_weights); a resumed run uses its checkpoint. null = off.
    init_from_hf: str | None = None

    def adopt_init_from_hf(self) -> dict:
        """Take the architecture fields from `init_from_hf`'s config.json (idempotent; cheap JSON).
        Returns {field: (old, new)} of what changed."""
        if not self.init_from_hf:
            return {}
        return adopt_hf_architecture(self)

    def validate(self) -> None:
        self.adopt_init_from_hf()
        for name in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "max_position_embeddings"):
            require_positive(f"model.{name}", getattr(self, name))
        require_positive("model.rotary_base", self.rotary_base)
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"model.hidden_size={self.hidden_size} is not divisible by "
                f"model.num_attention_heads={self.num_attention_heads}"
            )
        if self.num_query_groups is not None:
            require_positive("model.num_query_groups", self.num_query_groups)
            if self.num_attention_heads % self.num_query_groups:
                raise ConfigError(
                    f"model.num_attention_heads={self.num_attention_heads} is not divisible by "
                    f"model.num_query_groups={self.num_query_groups}"
                )
        if self.vocab_size is not None:
            require_positive("model.vocab_size", self.vocab_size)
        require_choice("model.transformer_impl", self.transformer_impl, TRANSFORMER_IMPLEMENTATIONS)
        require_choice("model.recompute", self.recompute, RECOMPUTE_MODES)
        require_range("model.attention_dropout", self.attention_dropout, 0, 1, high_inclusive=False)
        require_range("model.hidden_dropout", self.hidden_dropout, 0, 1, high_inclusive=False)
