"""The chat template applied to SFT records and generation prompts: a record -> its turns -> text
pieces marked trained or not, and the prompt of a one-question conversation. Plain text, no
torch: prompt streams (data/rl_prompts.py) and the local chain render prompts without loading
the training stack; data/sft.py tokenizes and packs the pieces. See data/sft.py for the record
forms and the rendering rules.

Cost: linear in the text of a record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from megatron_recipes.data.config import ChatTemplateConfig

TOOL_ROLES = ("tool", "ipython", "output")
PAIR_KEYS = (("prompt", "response"), ("question", "answer"), ("problem", "solution"), ("question", "response"))


class SftDataError(ValueError):
    """A record that cannot be used; the message names file and line."""


@dataclass(frozen=True)
class Piece:
    text: str
    trained: bool


def conversation_from_record(record: dict, where: str) -> tuple[list[dict], str]:
    """The list of {"role", "content"} turns of a record, and its kind."""
    kind = str(record.get("kind", ""))
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise SftDataError(f"{where}: 'messages' must be a non-empty list")
        turns = []
        for turn in messages:
            if not isinstance(turn, dict) or "role" not in turn or not isinstance(turn.get("content"), str):
                raise SftDataError(f"{where}: every message needs a 'role' and a string 'content'")
            turns.append({"role": str(turn["role"]), "content": turn["content"]})
        return turns, kind
    for prompt_key, response_key in PAIR_KEYS:
        if prompt_key in record and response_key in record:
            return [
                {"role": "user", "content": str(record[prompt_key])},
                {"role": "assistant", "content": str(record[response_key])},
            ], kind
    raise SftDataError(
        f"{where}: a record needs 'messages' or a prompt/response pair ({', '.join('/'.join(p) for p in PAIR_KEYS)})"
    )


def _fill(template: str, content: str) -> str:
    return template.replace("{content}", content)


def render_conversation(turns: Sequence[dict], template: ChatTemplateConfig, where: str = "") -> list[Piece]:
    """Turns -> text pieces marked trained or not (see module docstring). The conversation must
    contain an assistant turn; turns after the last assistant turn are dropped (nothing to learn)."""
    last_assistant = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=None)
    if last_assistant is None:
        raise SftDataError(f"{where}: the conversation has no assistant turn")
    pieces: list[Piece] = []
    previous = None
    for turn in turns[: last_assistant + 1]:
        role, content = turn["role"], turn["content"]
        if role == "system":
            pieces.append(Piece(_fill(template.system, content), False))
        elif role == "user":
            pieces.append(Piece(_fill(template.user, content), False))
        elif role == "assistant":
            if previous in TOOL_ROLES:
                pieces.append(Piece(_fill(template.assistant_after_tool, content), True))
            elif previous == "assistant":
                pieces.append(Piece(content, True))
            else:
                pieces.append(Piece(template.assistant_header, False))
                pieces.append(Piece(_fill(template.assistant, content), True))
        elif role in TOOL_ROLES:
            if previous != "assistant":
                raise SftDataError(f"{where}: a {role} turn must follow an assistant turn (the code it ran)")
            pieces.append(Piece(_fill(template.tool, content), False))
        else:
            raise SftDataError(f"{where}: unknown role {role!r} (system, user, assistant, tool)")
        previous = role
    return [piece for piece in pieces if piece.text]


def render_prompt(question: str, template: ChatTemplateConfig, system: str | None = None) -> str:
    """The generation prompt of a one-question conversation: system?, user turn, assistant header."""
    text = _fill(template.system, system) if system else ""
    return text + _fill(template.user, question) + template.assistant_header
