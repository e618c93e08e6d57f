"""A tiny model trained briefly on a real tokenized corpus gets well below its unigram entropy.

The corpus is real text found on this machine (the sympy/mpmath and standard-library docstrings
the sample builder collects), tokenized with a byte-level BPE trained here with HF `tokenizers`,
written with megatron-core's IndexedDatasetBuilder, and trained on through the real entry point
(`python -m megatron_recipes.pretrain`, CPU runtime). A model that only learned token
frequencies would sit at the unigram entropy; context must be used to go below it. Training
sees less than one epoch, so every training batch is scored before the model learned from it,
and the validation split (documents never trained on) is checked as well.
"""

from __future__ import annotations

import collections
import math
import random
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from beam_pipelines.sample import collect_sample_pages
from megatron_recipes.training.metrics import read_metrics
from tests.support import run_module

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
from indexed_corpus import write_indexed_dataset  # noqa: E402

VOCAB = 2048
STEPS = 160


def build_corpus(directory: Path) -> tuple[Path, float, int]:
    """Tokenizer path, unigram entropy (nats/token) and token count of a real-text corpus."""
    texts = [page.docstring for page in collect_sample_pages(1000, 1000) if page.docstring.strip()]
    random.Random(0).shuffle(texts)  # validation documents from the same mix as training ones
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=VOCAB,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer_path = directory / "tokenizer.json"
    tokenizer.save(str(tokenizer_path))
    end_of_document = tokenizer.token_to_id("<|endoftext|>")
    documents = [encoding.ids + [end_of_document] for encoding in tokenizer.encode_batch(texts)]
    assert tokenizer.decode(documents[0][:-1]) == texts[0]
    # Where and how `beam_pipelines.tokenize` writes a source: <work_dir>/tokenized/<source>.bin/.idx
    write_indexed_dataset(directory / "tokenized" / "math_corpus", documents, VOCAB)
    counts = collections.Counter(token for document in documents for token in document)
    total = sum(counts.values())
    entropy = -sum(count / total * math.log(count / total) for count in counts.values())
    return tokenizer_path, entropy, total


@pytest.mark.integration
def test_tiny_model_learns_a_real_corpus_well_below_unigram_entropy(tmp_path):
    tokenizer_path, unigram_entropy, corpus_tokens = build_corpus(tmp_path)
    assert corpus_tokens > 500_000 and 5.0 < unigram_entropy < 7.5
    seq_length, global_batch = 128, 16
    assert STEPS * global_batch * seq_length < corpus_tokens  # less than one epoch
    run = run_module(
        "megatron_recipes.pretrain",
        "trainer=cpu",
        "model=small_cpu",
        f"corpus.work_dir={tmp_path}",
        f"data.tokenizer={tokenizer_path}",  # the data=local preset
        f"data.seq_length={seq_length}",
        "data.split='95,5,0'",
        f"trainer.global_batch_size={global_batch}",
        f"trainer.micro_batch_size={global_batch}",
        f"trainer.train_steps={STEPS}",
        f"trainer.eval_interval={STEPS}",
        "trainer.eval_steps=4",
        "trainer.log_interval=40",
        f"trainer.output_dir={tmp_path / 'run'}",
        "trainer.peak_tflops_per_device=0.1",  # a nominal CPU peak, so that MFU is reported
        "optimizer=adamw_cosine",
        "optimizer.lr=3e-3",
        "optimizer.warmup_steps=15",
        "checkpoint.save_interval=0",
        "checkpoint.save_at_end=false",
        timeout=900,
        OMP_NUM_THREADS="2",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert sorted(rows) == list(range(1, STEPS + 1))
    assert {"loss", "lr", "grad_norm", "tokens_per_second", "mfu", "memory_gib"} <= set(rows[STEPS])
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    first = rows[1]["loss"]
    late = sum(rows[step]["loss"] for step in range(STEPS - 9, STEPS + 1)) / 10
    validation = rows[STEPS]["validation_loss"]
    print(
        f"unigram entropy {unigram_entropy:.3f} nats; loss step 1 {first:.3f}, last 10 steps {late:.3f}, "
        f"validation {validation:.3f}"
    )
    assert first > unigram_entropy  # starts above it (near ln(vocab))
    assert late < unigram_entropy - 1.5
    assert validation < unigram_entropy - 1.5
