import pytest

from tests.megatron_recipes.convert.tiny_models import GQA_UNTIED, TIED, write_tiny_llama


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """Two random HF checkpoints, made once per session: `gqa` (sharded into many small files,
    untied, GQA) and `tied` (one model.safetensors, tied embeddings)."""
    root = tmp_path_factory.mktemp("hf")
    write_tiny_llama(root / "gqa", GQA_UNTIED, seed=0, max_shard_size="40KB")
    write_tiny_llama(root / "tied", TIED, seed=1)
    return {"gqa": root / "gqa", "tied": root / "tied"}
