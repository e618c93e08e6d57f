"""Cases that run megatron-core reward models in this process with the CPU runtime layer
(process-wide), so test_reward_model_megatron.py runs this file as its own pytest process. Not
collected directly (the file name does not start with test_).

Covered: a reward model initialised from a policy checkpoint holds the policy's weights and a
fresh head; its scores are the head applied to GPTModel's own final hidden states; the scorer
reads the documented positions; export to Hugging Face (LlamaForSequenceClassification for an
ORM, LlamaForTokenClassification for a PRM) gives the same logits within 1e-4, and importing the
export back gives our scores again.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
import transformers

from megatron_recipes.convert.hf_to_megatron import import_hf_checkpoint, load_hf_weights
from megatron_recipes.convert.megatron_to_hf import export_megatron_checkpoint
from megatron_recipes.generation.tokenizer import TextTokenizer
from megatron_recipes.models.config import ModelConfig
from megatron_recipes.models.llama import build_model
from megatron_recipes.reward_models.kinds import get_reward_model_kind
from megatron_recipes.reward_models.model import HEAD_INIT_SEED, NEW_MODULES, build_reward_model
from megatron_recipes.reward_models.scoring import RewardModelScorer
from megatron_recipes.runtime.config import ParallelismConfig
from megatron_recipes.runtime.distributed import initialize_runtime, shutdown_runtime
from megatron_recipes.training.checkpointing import load_model_weights, read_checkpoint_info, save_checkpoint
from tests.megatron_recipes.convert.tiny_models import TIED, write_tiny_llama
from tests.megatron_recipes.posttraining.arithmetic import chat_texts, train_small_tokenizer, write_arithmetic_sft

SIZES = dict(num_layers=2, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4, max_position_embeddings=128)


@pytest.fixture(scope="module")
def runtime():
    yield initialize_runtime("cpu", ParallelismConfig(), seed=11)
    shutdown_runtime()


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    work = tmp_path_factory.mktemp("tok")
    records = write_arithmetic_sft(work / "c.jsonl", 200)
    return str(train_small_tokenizer(work / "tok", chat_texts(records), 300))


@pytest.fixture(scope="module")
def tokenizer(tokenizer_path):
    return TextTokenizer(tokenizer_path)


def model_config():
    # Large initial weights: scores that differ clearly between positions and sequences.
    return ModelConfig(**SIZES, init_method_std=0.2)


def save_policy(directory, tokenizer):
    chunks = build_model(model_config(), ParallelismConfig(), tokenizer.vocab_size)
    record = {**asdict(model_config()), "vocab_size": tokenizer.vocab_size}
    save_checkpoint(directory, 0, chunks, model_config=record, train_state={"extra": {"tokenizer": tokenizer.path}})
    return chunks


def reward_model_from(path, kind, tokenizer):
    chunks = build_reward_model(model_config(), ParallelismConfig(), tokenizer.vocab_size, kind=kind)
    load_model_weights(path, chunks, new_modules=NEW_MODULES)
    return chunks


def batch(tokenizer, texts):
    """Right-padded with the end-of-document token (what an HF sequence classifier skips)."""
    ids = [tokenizer.encode(text) for text in texts]
    length = max(len(row) for row in ids)
    tokens = torch.full((len(ids), length), tokenizer.eod, dtype=torch.long)
    for row, values in enumerate(ids):
        tokens[row, : len(values)] = torch.tensor(values)
    return tokens, [len(values) for values in ids]


def scores_of(chunks, tokens):
    chunks[0].eval()
    with torch.no_grad():
        positions = torch.arange(tokens.shape[1]).unsqueeze(0).expand(tokens.shape[0], -1)
        return chunks[0](tokens, positions, None)


TEXTS = [
    "User: Calculate 3 + 4.\n\nAssistant: The answer is $\\boxed{7}$.",
    "User: Calculate 9 + 8.\n\nAssistant: So 9 + 8 = 17.",
    "User: What is",
]


def test_initialised_from_a_policy_with_a_fresh_head(runtime, tokenizer, tmp_path):
    policy = save_policy(tmp_path / "policy", tokenizer)
    reward = reward_model_from(tmp_path / "policy", "orm", tokenizer)
    policy_state, reward_state = policy[0].state_dict(), reward[0].state_dict()
    shared = [key for key in reward_state if not key.startswith("reward_head") and "_extra_state" not in key]
    assert len(shared) > 10 and "output_layer.weight" not in reward_state
    for key in shared:
        assert torch.equal(policy_state[key], reward_state[key]), key
    expected = torch.randn(1, SIZES["hidden_size"], generator=torch.Generator().manual_seed(HEAD_INIT_SEED)) * 0.2
    assert torch.allclose(reward_state["reward_head.weight"], expected)
    # The scores are the head on GPTModel's final hidden states (captured at its output layer).
    tokens, _ = batch(tokenizer, TEXTS)
    captured = {}
    handle = policy[0].output_layer.register_forward_hook(lambda module, inputs, output: captured.update(h=inputs[0]))
    scores_of(policy, tokens)
    handle.remove()
    expected_scores = (captured["h"] @ reward_state["reward_head.weight"].T).squeeze(-1).transpose(0, 1)
    assert torch.allclose(scores_of(reward, tokens), expected_scores, atol=1e-5)


def test_scorer_reads_the_documented_positions(runtime, tokenizer, tmp_path):
    save_policy(tmp_path / "policy", tokenizer)
    for kind in ("orm", "prm"):
        chunks = reward_model_from(tmp_path / "policy", kind, tokenizer)
        scorer = RewardModelScorer(chunks, kind, "\n", 2, tokenizer.eod, tokenizer.decode, 8)
        prompt = tokenizer.encode("User: Calculate 3 + 4.\n\nAssistant:")
        text = " 3 + 4 = 7\nThe answer is $\\boxed{7}$."
        response = tokenizer.encode(text) + [tokenizer.eod]
        [result] = scorer.score([(prompt, response, text)])
        logits = scores_of(chunks, torch.tensor([prompt + response[:-1]]))[0]
        if kind == "orm":
            assert result == pytest.approx([torch.sigmoid(logits[-1]).item()], abs=1e-6)
        else:
            first_step_end = len(prompt) + len(tokenizer.encode(" 3 + 4 = 7")) - 1
            assert len(result) == 2
            assert result[0] == pytest.approx(torch.sigmoid(logits[first_step_end]).item(), abs=1e-6)
            assert result[1] == pytest.approx(torch.sigmoid(logits[-1]).item(), abs=1e-6)


@pytest.mark.parametrize("kind", ["orm", "prm"])
def test_export_to_hugging_face_has_logit_parity_and_imports_back(runtime, tokenizer, tmp_path, kind):
    save_policy(tmp_path / "policy", tokenizer)
    ours = reward_model_from(tmp_path / "policy", kind, tokenizer)
    with torch.no_grad():  # a trained-looking head, not the small initial one
        ours[0].reward_head.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(3))
    hf_class = get_reward_model_kind(kind).hf_class
    record = {
        **model_config().__dict__,
        "vocab_size": tokenizer.vocab_size,
        "reward_model_kind": kind,
        "hf_class": hf_class,
    }
    save_checkpoint(tmp_path / "rm", 5, ours, model_config=record, train_state={"extra": {"tokenizer": tokenizer.path}})
    export_megatron_checkpoint(tmp_path / "rm", tmp_path / "hf")
    loader = (
        transformers.AutoModelForSequenceClassification
        if kind == "orm"
        else transformers.AutoModelForTokenClassification
    )
    hf = loader.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32).eval()
    assert type(hf).__name__ == hf_class and hf.config.pad_token_id == tokenizer.eod
    assert (tmp_path / "hf" / "tokenizer.json").exists()
    tokens, lengths = batch(tokenizer, TEXTS)
    ours_scores = scores_of(ours, tokens)
    with torch.no_grad():
        hf_logits = hf(input_ids=tokens, attention_mask=(tokens != tokenizer.eod).long()).logits
    if kind == "orm":
        # The classifier pools the last non-padding token: our score at each response's last token.
        expected = torch.stack([ours_scores[row, length - 1] for row, length in enumerate(lengths)])
        assert hf_logits.shape == (3, 1)
        print(f"{kind}: max |HF - ours| = {float((hf_logits[:, 0] - expected).abs().max()):.2e}")
        assert torch.allclose(hf_logits[:, 0], expected, atol=1e-4), (hf_logits[:, 0], expected)
    else:
        worst = max(float((hf_logits[r, :n, 0] - ours_scores[r, :n]).abs().max()) for r, n in enumerate(lengths))
        print(f"{kind}: max |HF - ours| = {worst:.2e}")
        for row, length in enumerate(lengths):
            assert torch.allclose(hf_logits[row, :length, 0], ours_scores[row, :length], atol=1e-4)
    imported = import_hf_checkpoint(tmp_path / "hf", tmp_path / "imported")
    info = read_checkpoint_info(imported)
    assert info["model_config"]["reward_model_kind"] == kind and info["model_config"]["hf_class"] == hf_class
    again = build_reward_model(model_config(), ParallelismConfig(), tokenizer.vocab_size, kind=kind)
    load_model_weights(imported, again)
    assert torch.allclose(scores_of(again, tokens), ours_scores, atol=1e-6)


def test_initialised_from_a_hugging_face_base_model(runtime, tmp_path):
    """model.init_from_hf on a reward model: every weight from the HF causal LM, the head new."""
    hf = write_tiny_llama(tmp_path / "hf", TIED, seed=4)
    config = ModelConfig(init_from_hf=str(tmp_path / "hf"))
    config.adopt_init_from_hf()
    chunks = build_reward_model(config, ParallelismConfig(), TIED["vocab_size"], kind="prm")
    load_hf_weights(tmp_path / "hf", chunks, new_modules=NEW_MODULES)
    state = chunks[0].state_dict()
    assert torch.equal(state["embedding.word_embeddings.weight"][: TIED["vocab_size"]], hf.model.embed_tokens.weight)
    assert torch.equal(state["decoder.final_layernorm.weight"], hf.model.norm.weight)
    assert state["reward_head.weight"].shape == (1, TIED["hidden_size"])
