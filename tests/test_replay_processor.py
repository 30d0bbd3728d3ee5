"""The replay processor's batch bookkeeping: adds, removals, moves and swaps keep scripts apart."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
vllm_lp = pytest.importorskip("vllm.v1.sample.logits_processor")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402

from pytest_glm45.replay import REPLAY_XARG  # noqa: E402
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
