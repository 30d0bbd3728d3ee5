"""Replay: a vLLM logits processor that makes any model emit a scripted output.

This module runs inside vLLM's engine process; the kit registers it on every server it
boots with `--logits-processors pytest_glm45.replay_processor:ReplayLogitsProcessor`.

A request carries its script as `vllm_xargs: {"glm45_replay": "<text>"}`. The processor
tokenizes the script once with the served model's own tokenizer, then at every step masks
each scripted request's logits to the one token the script asks for next, and after the
last one to the end-of-text token, so generation stops. Markup in a script (`<tool_call>`,
`</think>`, ...) is forced as its single added token, as GLM writes it; a request that names
tags in `vllm_xargs: {"glm45_replay_as_text": "<tool_call> </think>"}` gets those tags spelled
as ordinary text pieces instead (`<` then `tool`, `_`, `call`, `>`): the same characters, none
of them an added token. Requests without a script are
untouched. Because the forced token is the only finite logit, sampling settings
(temperature, top-p, penalties) cannot change what comes out.

State is kept per batch slot and follows vLLM's persistent-batch updates exactly in the
documented order: removals, then additions (which may replace a slot), then moves and
swaps.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import torch
from vllm.v1.sample.logits_processor import (
    BatchUpdate,
    LogitsProcessor,
    MoveDirectionality,
)

from pytest_glm45.glm.glm_format import END_OF_TEXT
from pytest_glm45.glm.replay import AS_TEXT_XARG, REPLAY_XARG, check_as_text, check_script, parse_as_text

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.config import VllmConfig

_CACHE_SIZE = 1024
_log = logging.getLogger(__name__)


class _Slot:
    """One scripted request: its token ids and a live reference to its output ids."""

    __slots__ = ("output_ids", "script_ids")

    def __init__(self, script_ids: list[int], output_ids: list[int]) -> None:
        self.script_ids = script_ids
        self.output_ids = output_ids


class ReplayLogitsProcessor(LogitsProcessor):  # type: ignore[misc]  # vLLM ships no type information
    """Force scripted requests to emit their script, then end-of-text."""

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool) -> None:
        self._model_config = vllm_config.model_config
        self._tokenizer: Any = None
        self._stop_id: int | None = None
        self._encoded: OrderedDict[tuple[str, tuple[str, ...]], list[int]] = OrderedDict()
        self._pieces: dict[str, list[int]] = {}
        self._slots: dict[int, _Slot] = {}

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Reject a malformed script with HTTP 400 before it reaches the batch."""
        extra = sampling_params.extra_args or {}
        if REPLAY_XARG in extra:
            problem = check_script(extra[REPLAY_XARG])
            if problem:
                raise ValueError(problem)
        if AS_TEXT_XARG in extra:
            problem = check_as_text(extra[AS_TEXT_XARG])
            if problem:
                raise ValueError(problem)

    def is_argmax_invariant(self) -> bool:
        """False: replay changes which token wins, so vLLM must apply it even under greedy sampling."""
        return False

    # -- state -------------------------------------------------------------------------

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Follow the batch: start, move and drop the scripts of the requests in it."""
        if batch_update is None:
            return
        for index in batch_update.removed:
            self._slots.pop(index, None)
        for index, params, _prompt_ids, output_ids in batch_update.added:
            extra = (params.extra_args or {}) if params is not None else {}
            script = extra.get(REPLAY_XARG)
            if script is None:
                # An added request may take the slot of one that left: forget the old script.
                self._slots.pop(index, None)
            else:
                self._slots[index] = _Slot(self._encode(script, parse_as_text(extra.get(AS_TEXT_XARG))), output_ids)
        for src, dst, direction in batch_update.moved:
            a = self._slots.pop(src, None)
            b = self._slots.pop(dst, None)
            if a is not None:
                self._slots[dst] = a
            if direction == MoveDirectionality.SWAP and b is not None:
                self._slots[src] = b

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Force each replaying request's next scripted token (then the end of text)."""
        if not self._slots:
            return logits
        rows: list[int] = []
        targets: list[int] = []
        stop = self._stop_token()
        for index, slot in self._slots.items():
            if index >= logits.shape[0]:
                continue
            position = len(slot.output_ids)
            rows.append(index)
            targets.append(slot.script_ids[position] if position < len(slot.script_ids) else stop)
        if rows:
            row_index = torch.tensor(rows, device=logits.device)
            target_index = torch.tensor(targets, device=logits.device)
            logits[row_index] = float("-inf")
            logits[row_index, target_index] = 0.0
        return logits

    # -- tokenizer -----------------------------------------------------------------------

    def _tok(self) -> Any:
        if self._tokenizer is None:
            from vllm.tokenizers import cached_tokenizer_from_config

            self._tokenizer = cached_tokenizer_from_config(self._model_config)
        return self._tokenizer

    def _stop_token(self) -> int:
        if self._stop_id is None:
            tok = self._tok()
            stop = tok.convert_tokens_to_ids(END_OF_TEXT)
            if not isinstance(stop, int) or stop == getattr(tok, "unk_token_id", None):
                stop = tok.eos_token_id
            self._stop_id = int(stop)
        return self._stop_id

    def _encode(self, script: str, as_text: tuple[str, ...] = ()) -> list[int]:
        """The script's token ids: markup as its added token, or, for the tags in `as_text`, as text pieces."""
        key = (script, as_text)
        ids = self._encoded.get(key)
        if ids is not None:
            self._encoded.move_to_end(key)
            return ids
        tok = self._tok()
        if not as_text:
            ids = list(tok.encode(script, add_special_tokens=False))
        else:
            ids = []
            tags = "|".join(re.escape(tag) for tag in sorted(as_text, key=len, reverse=True))
            # re.split with a group: ordinary text at even positions, the named tags at odd ones.
            for n, part in enumerate(re.split(f"({tags})", script)):
                if part:
                    ids += self._text_pieces(part) if n % 2 else list(tok.encode(part, add_special_tokens=False))
        self._encoded[key] = ids
        if len(self._encoded) > _CACHE_SIZE:
            self._encoded.popitem(last=False)
        return ids

    def _text_pieces(self, tag: str) -> list[int]:
        """`tag` as ordinary tokens that decode to exactly its characters, none of them an added token.

        The tokenizer matches added tokens before anything else, so the tag is encoded in parts that do
        not contain it: its first character, then the rest (`<` + `tool_call>`), or else one character
        at a time.
        """
        ids = self._pieces.get(tag)
        if ids is not None:
            return ids
        tok = self._tok()
        added = {int(i) for i in getattr(tok, "all_special_ids", ()) or ()}
        get_added = getattr(tok, "get_added_vocab", None)
        if callable(get_added):
            added |= {int(i) for i in get_added().values()}

        def encode(text: str) -> list[int]:
            return list(tok.encode(text, add_special_tokens=False))

        candidates = [encode(tag[:1]) + encode(tag[1:]), [i for ch in tag for i in encode(ch)]]
        for candidate in candidates:
            if candidate and not added.intersection(candidate) and tok.decode(candidate) == tag:
                self._pieces[tag] = candidate
                return candidate
        # No spelling without an added token: replay the tag as the tokenizer spells it, and say so in the log
        # (raising here would take the engine down with every request in its batch).
        _log.error("glm45 replay: %r has no spelling in ordinary tokens in this tokenizer; replayed as its added token", tag)
        self._pieces[tag] = encode(tag)
        return self._pieces[tag]
