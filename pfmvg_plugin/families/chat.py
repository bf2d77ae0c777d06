"""Prompt and answer text of one training example, rendered with a processor's own chat template.

The template is rendered for a user turn (image + instruction) with the generation prompt, exactly as at inference,
and for the same turn followed by the assistant's answer; the answer text is what the second adds to the first. The
template is rendered once with placeholders and then filled in, which is checked against a full render; a template
that transforms its text (strips, escapes, ...) is rendered for every example instead.
"""

from __future__ import annotations

from collections.abc import Callable

_INSTRUCTION, _ANSWER = "\x00pfmvg-instruction\x00", "\x00pfmvg-answer\x00"


class ChatRenderer:
    """``(instruction, answer) -> (prompt, answer_text)`` with ``processor.chat_template``; ``fallback`` renders when
    the processor has no template (or one whose prompt is not a prefix of the full conversation)."""

    def __init__(self, processor, fallback: Callable[[str, str], tuple[str, str]]) -> None:
        self.processor = processor
        self.fallback = fallback
        self._parts: tuple[str, str] | None | bool = None  # None: not probed; False: render each time

    def render(self, instruction: str, answer: str) -> tuple[str, str]:
        if getattr(self.processor, "chat_template", None):
            user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}
            bot = {"role": "assistant", "content": [{"type": "text", "text": answer}]}
            prompt = self.processor.apply_chat_template([user], add_generation_prompt=True, tokenize=False)
            full = self.processor.apply_chat_template([user, bot], tokenize=False)
            if full.startswith(prompt):
                return prompt, full[len(prompt):]
        return self.fallback(instruction, answer)

    def __call__(self, instruction: str, answer: str) -> tuple[str, str]:
        if self._parts is None:
            prompt, tail = self.render(_INSTRUCTION, _ANSWER)
            ok = prompt.count(_INSTRUCTION) == 1 and tail.count(_ANSWER) == 1 and _ANSWER not in prompt
            self._parts = (prompt, tail) if ok else False
            if ok and self._fill(instruction, answer) != self.render(instruction, answer):
                self._parts = False
        if self._parts:
            return self._fill(instruction, answer)
        return self.render(instruction, answer)

    def _fill(self, instruction: str, answer: str) -> tuple[str, str]:
        prompt, tail = self._parts
        return prompt.replace(_INSTRUCTION, instruction), tail.replace(_ANSWER, answer)
