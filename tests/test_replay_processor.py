"""The replay processor's batch bookkeeping: adds, removals, moves and swaps keep scripts apart."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import ClassVar

import pytest

torch = pytest.importorskip("torch")
vllm_lp = pytest.importorskip("vllm.v1.sample.logits_processor")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402

from pytest_glm45.glm.replay import AS_TEXT_XARG, REPLAY_XARG, as_text_xargs  # noqa: E402
from pytest_glm45.replay_processor import ReplayLogitsProcessor  # noqa: E402

VOCAB = 64
STOP = 63


class FakeTokenizer:
    """One token per character, so a script's expected ids are easy to state."""

    eos_token_id = STOP

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) % 60 for c in text]

    def convert_tokens_to_ids(self, token: str) -> int:
        return STOP


def processor() -> ReplayLogitsProcessor:
    p = ReplayLogitsProcessor(SimpleNamespace(model_config=None), torch.device("cpu"), False)  # type: ignore[arg-type]
    p._tokenizer = FakeTokenizer()
    return p


def params(script: str | None) -> SamplingParams:
    return SamplingParams(extra_args={REPLAY_XARG: script} if script is not None else None)


class Batch:
    """A miniature persistent batch: slot -> (request name, script or None, output ids)."""

    def __init__(self) -> None:
        self.slots: dict[int, tuple[str, str | None, list[int]]] = {}
        self.proc = processor()

    def update(self, removed=(), added=(), moved=()) -> None:
        for i in removed:
            self.slots.pop(i)
        adds = []
        for i, name, script in added:
            out: list[int] = []
            self.slots[i] = (name, script, out)
            adds.append((i, params(script), [1, 2], out))
        for a, b, kind in moved:
            sa, sb = self.slots.pop(a, None), self.slots.pop(b, None)
            if sa:
                self.slots[b] = sa
            if kind == MoveDirectionality.SWAP and sb:
                self.slots[a] = sb
        size = max(self.slots) + 1 if self.slots else 0
        self.proc.update_state(BatchUpdate(batch_size=size, removed=list(removed), added=adds, moved=list(moved)))

    def step(self, rng: random.Random) -> None:
        size = max(self.slots) + 1
        logits = torch.randn(size, VOCAB, generator=torch.Generator().manual_seed(rng.randint(0, 10**6)))
        before = logits.clone()
        out = self.proc.apply(logits)
        for i, (name, script, ids) in self.slots.items():
            if script is None:
                assert torch.equal(out[i], before[i]), f"{name}: an unscripted request was touched"
                ids.append(int(out[i].argmax()))
                continue
            expected = [*FakeTokenizer().encode(script), STOP]
            want = expected[len(ids)] if len(ids) < len(expected) else STOP
            assert int(out[i].argmax()) == want, f"{name} at slot {i}, position {len(ids)}"
            assert torch.isinf(out[i]).sum() == VOCAB - 1
            ids.append(want)


def test_scripts_stay_with_their_requests_through_every_batch_change() -> None:
    rng = random.Random(0)
    b = Batch()
    b.update(added=[(0, "a", "alpha"), (1, "b", None), (2, "c", "charlie!")])
    b.step(rng)
    b.update(moved=[(0, 2, MoveDirectionality.SWAP)])
    b.step(rng)
    b.update(removed=[1])
    b.update(added=[(1, "d", "delta-delta")])  # a new request takes a freed slot
    b.step(rng)
    b.update(removed=[2], moved=[(1, 2, MoveDirectionality.UNIDIRECTIONAL)])
    b.step(rng)
    b.update(added=[(1, "e", None)])  # an unscripted request in a slot a script once held
    b.step(rng)
    b.step(rng)


def test_random_batch_churn_never_mixes_scripts() -> None:
    rng = random.Random(45)
    b = Batch()
    names = iter(range(10**6))
    for _ in range(300):
        free = [i for i in range(8) if i not in b.slots]
        op = rng.random()
        if free and op < 0.35:
            n = next(names)
            script = None if rng.random() < 0.3 else "".join(rng.choice("abcxyz<>/ ") for _ in range(rng.randint(1, 12)))
            b.update(added=[(rng.choice(free), f"r{n}", script)])
        elif b.slots and op < 0.55:
            b.update(removed=[rng.choice(list(b.slots))])
        elif len(b.slots) >= 2 and op < 0.75:
            x, y = rng.sample(list(b.slots), 2)
            b.update(moved=[(x, y, MoveDirectionality.SWAP)])
        elif b.slots and free and op < 0.85:
            b.update(moved=[(rng.choice(list(b.slots)), rng.choice(free), MoveDirectionality.UNIDIRECTIONAL)])
        if b.slots:
            b.step(rng)


def test_bad_scripts_are_rejected_before_the_batch() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        ReplayLogitsProcessor.validate_params(SamplingParams(extra_args={REPLAY_XARG: 3}))
    with pytest.raises(ValueError, match="must not be empty"):
        ReplayLogitsProcessor.validate_params(SamplingParams(extra_args={REPLAY_XARG: ""}))
    ReplayLogitsProcessor.validate_params(SamplingParams(extra_args={"other": 1}))


class MarkupTokenizer:
    """Each character of ALPHABET is one id (1-33); `<tool_call>` and `</think>` are added tokens 60 and 61,
    matched before anything else as a real tokenizer matches added tokens."""

    ALPHABET = "<>/_.! abcdefghijklmnopqrstuvwxyz"

    eos_token_id = STOP
    all_special_ids = (STOP,)
    ADDED: ClassVar[dict[str, int]] = {"<tool_call>": 60, "</think>": 61}

    def get_added_vocab(self) -> dict[str, int]:
        return dict(self.ADDED)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids: list[int] = []
        i = 0
        while i < len(text):
            tag = next((t for t in self.ADDED if text.startswith(t, i)), None)
            if tag:
                ids.append(self.ADDED[tag])
                i += len(tag)
            else:
                ids.append(self.ALPHABET.index(text[i]) + 1)
                i += 1
        return ids

    def decode(self, ids: list[int]) -> str:
        names = {v: k for k, v in self.ADDED.items()}
        return "".join(names.get(i) or self.ALPHABET[i - 1] for i in ids)

    def convert_tokens_to_ids(self, token: str) -> int:
        return STOP


def forced(proc: ReplayLogitsProcessor, script: str, xargs: dict[str, str]) -> list[int]:
    """Run one request through the processor to the end of its script: the ids it forces."""
    out: list[int] = []
    proc.update_state(BatchUpdate(batch_size=1, removed=[], moved=[],
                                  added=[(0, SamplingParams(extra_args={REPLAY_XARG: script, **xargs}), [1], out)]))  # fmt: skip
    while not out or out[-1] != STOP:
        out.append(int(proc.apply(torch.zeros(1, VOCAB)).argmax()))
    return out[:-1]


def test_markup_is_forced_as_its_added_token_or_spelled_as_text_on_request() -> None:
    proc = processor()
    proc._tokenizer = tok = MarkupTokenizer()
    script = "ok.<tool_call>get</think>!"
    assert forced(proc, script, {}) == tok.encode(script), "by default markup is its single added token"
    pieces = forced(processor_with(tok), script, as_text_xargs(["<tool_call>"]))
    assert 60 not in pieces and 61 in pieces, "only the named tag is spelled as text; </think> stays its token"
    assert tok.decode(pieces) == script, "the same characters"
    both = forced(processor_with(tok), script, {AS_TEXT_XARG: "<tool_call> </think>"})
    assert not {60, 61} & set(both) and tok.decode(both) == script
    # The default and the as-text spelling of one script are cached apart.
    proc2 = processor_with(tok)
    assert forced(proc2, script, {}) != forced(proc2, script, {AS_TEXT_XARG: "</think>"})


def processor_with(tok: MarkupTokenizer) -> ReplayLogitsProcessor:
    p = processor()
    p._tokenizer = tok
    return p


def test_as_text_names_only_markup() -> None:
    for bad, error in ((3, "must be a string"), ("", "no tag"), ("<tool_call> <b>", "'<b>' is not markup")):
        with pytest.raises(ValueError, match=error):
            ReplayLogitsProcessor.validate_params(SamplingParams(extra_args={REPLAY_XARG: "x", AS_TEXT_XARG: bad}))
    ReplayLogitsProcessor.validate_params(SamplingParams(extra_args={REPLAY_XARG: "x", AS_TEXT_XARG: "<tool_call> </think>"}))
    with pytest.raises(ValueError, match="not markup"):
        as_text_xargs(["tool_call"])
    assert as_text_xargs([]) == {}
