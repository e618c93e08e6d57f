"""Runs the evaluate entry point in this process and kills it with SIGKILL when its generator is
asked for batch number KILL_AT (the chunks before it were scored and committed; nothing after it
was). KILL_AT=0 never kills.

    python -m tests.megatron_recipes.evaluation.resume_driver KILL_AT [evaluate overrides...]

The generator is the one the entry point builds (precomputed or megatron), wrapped: every call
before KILL_AT is passed through unchanged.
"""

from __future__ import annotations

import os
import signal
import sys

import megatron_recipes.evaluate as entry_point
from megatron_recipes.recipes import evaluate as recipe


class KillAtCall:
    def __init__(self, generator, kill_at: int):
        self.generator, self.kill_at, self.calls = generator, kill_at, 0

    def __getattr__(self, name):  # context_length, tokenizer, ... of the real generator
        return getattr(self.generator, name)

    def generate(self, prompts, params, request_ids=None):
        self.calls += 1
        if self.calls == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.generator.generate(prompts, params, request_ids=request_ids)


def main() -> None:
    kill_at, overrides = int(sys.argv[1]), sys.argv[2:]
    build = recipe.build_generator
    recipe.build_generator = lambda name, **options: KillAtCall(build(name, **options), kill_at)
    entry_point.main(overrides)


if __name__ == "__main__":
    main()
