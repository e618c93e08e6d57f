import pytest

from tests.megatron_recipes.convert.tiny_models import GQA_UNTIED, QWEN2_TIED_GQA, TIED, write_tiny_llama


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """Three random HF checkpoints, made once per session: `gqa` (sharded into many small files,
    untied, GQA), `tied` (one model.safetensors, tied embeddings) and `qwen2` (Qwen2ForCausalLM:
    q/k/v biases, GQA, tied embeddings, sharded)."""
    root = tmp_path_factory.mktemp("hf")
    write_tiny_llama(root / "gqa", GQA_UNTIED, seed=0, max_shard_size="40KB")
    write_tiny_llama(root / "tied", TIED, seed=1)
    write_tiny_llama(root / "qwen2", QWEN2_TIED_GQA, seed=2, max_shard_size="40KB", family="qwen2")
    return {"gqa": root / "gqa", "tied": root / "tied", "qwen2": root / "qwen2"}
