"""A Ray cluster as the engine for plans beyond one host: its nodes and GPUs, read through Ray's own API.

GLM-4.5 in BF16 does not fit one 8 x H100 host; vLLM serves it across hosts with pipeline parallel
between them (`--pipeline-parallel-size`, `--distributed-executor-backend ray`) on a Ray cluster the
user runs. The kit never starts or stops that cluster: it reads the cluster's nodes before booting
(`ray.nodes()`), checks them against the plan (preflight), starts vLLM on this host (a node of the
cluster) and, at the end, stops only that vLLM; vLLM's exit releases the workers it placed.

`GLM45_RAY_CLUSTER` names a JSON file in `ray.nodes()`'s shape to use instead of asking Ray (the kit's
own tests describe fake clusters this way; a user can check a plan against a cluster described on paper).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_glm45.engine.inventory import Gpu

#: The environment variable Ray itself reads for the cluster's address.
RAY_ADDRESS_ENV = "RAY_ADDRESS"
#: A JSON file in `ray.nodes()`'s shape to read instead of the cluster.
CLUSTER_ENV = "GLM45_RAY_CLUSTER"
GIB = 2**30
#: Ray tells a node's GPU model (its `accelerator_type:<model>` resource), not its memory or compute
#: capability: those come from the model's datasheet (first match wins; most specific first).
ACCELERATORS: tuple[tuple[str, int, tuple[int, int]], ...] = (
    ("GH200", 96, (9, 0)),
    ("H200", 141, (9, 0)),
    ("H100", 80, (9, 0)),
    ("H800", 80, (9, 0)),
    ("H20", 96, (9, 0)),
    ("B200", 180, (10, 0)),
    ("A100-40G", 40, (8, 0)),
    ("A100", 80, (8, 0)),
    ("A800", 80, (8, 0)),
    ("L40S", 48, (8, 9)),
    ("L40", 48, (8, 9)),
    ("L4", 24, (8, 9)),
)


def start_commands(head: str = "<head-host>") -> str:
    """How a user starts a Ray cluster for the kit (Ray's own commands; the kit starts none) and names it."""
    return (f"start one with `ray start --head --port 6379` on the head host and `ray start --address {head}:6379` on "
            f"every other host, then run the kit on the head host with --glm45-ray-address {head}:6379 (or RAY_ADDRESS)")  # fmt: skip


class ClusterError(ValueError):
    """A cluster that cannot be read: Ray missing, unreachable, or a described cluster that does not parse."""


@dataclass(frozen=True)
class Node:
    """One alive node of the cluster and its GPUs."""

    address: str
    gpus: tuple[Gpu, ...]


@dataclass(frozen=True)
class Cluster:
    """The cluster's alive nodes; `source` says how it was read (`ray` or the described file)."""

    address: str
    nodes: tuple[Node, ...]
    source: str

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        """Every GPU of every node."""
        return tuple(g for node in self.nodes for g in node.gpus)

    @property
    def count(self) -> int:
        """How many GPUs the cluster has."""
        return len(self.gpus)

    def groups_of(self, size: int) -> int:
        """How many groups of `size` GPUs on one node the cluster holds: a tensor-parallel group never spans hosts."""
        return sum(len(node.gpus) // size for node in self.nodes)

    def summary(self) -> str:
        """One line: the nodes and their GPUs."""
        kinds: dict[str, int] = {}
        for g in self.gpus:
            kinds[g.name] = kinds.get(g.name, 0) + 1
        what = ", ".join(f"{n} x {name}" for name, n in kinds.items()) or "no GPU"
        per_node = "+".join(str(len(node.gpus)) for node in self.nodes)
        return f"Ray cluster at {self.address}: {len(self.nodes)} nodes ({per_node} GPUs), {what} [{self.source}]"


def accelerator(name: str) -> tuple[int, tuple[int, int]] | None:
    """(memory GiB, compute capability) of a GPU model Ray names, or None when unknown."""
    for fragment, gib, cc in ACCELERATORS:
        if fragment.lower() in name.lower():
            return gib, cc
    return None


def from_nodes(address: str, nodes: Sequence[Mapping[str, Any]], source: str) -> Cluster:
    """A Cluster from `ray.nodes()`'s records: alive nodes with their `GPU` count and `accelerator_type:` model."""
    out = []
    index = 0
    for n, record in enumerate(nodes):
        if not isinstance(record, Mapping):
            raise ClusterError(f"{source}: node {n} is {type(record).__name__}; accepted: a ray.nodes() record (an object)")
        if not record.get("Alive", True):
            continue
        resources = record.get("Resources") or {}
        if not isinstance(resources, Mapping):
            raise ClusterError(f"{source}: node {n}'s Resources is not an object")
        count = resources.get("GPU", 0)
        if not isinstance(count, (int, float)) or count < 0 or count != int(count):
            raise ClusterError(f"{source}: node {n} has GPU {count!r}; accepted: a whole number")
        kinds = [key.split(":", 1)[1] for key in resources if str(key).startswith("accelerator_type:")]
        name = kinds[0] if kinds else "unknown GPU"
        known = accelerator(name)
        if int(count) and known is None:
            raise ClusterError(f"{source}: node {n}'s GPU model {name!r} is not one the kit knows the memory of; "
                               f"known: {', '.join(f for f, _, _ in ACCELERATORS)}")  # fmt: skip
        gib, cc = known or (0, (0, 0))
        gpus = []
        for _ in range(int(count)):
            gpus.append(Gpu(index, f"NVIDIA {name}", gib * GIB, cc))
            index += 1
        out.append(Node(str(record.get("NodeManagerAddress") or f"node{n}"), tuple(gpus)))
    if not out:
        raise ClusterError(f"{source}: no alive node")
    return Cluster(address, tuple(out), source)


def read_cluster(address: str) -> Cluster:
    """The cluster at `address`, from Ray (`ray.init(address=...)`, `ray.nodes()`, disconnect), or from the
    file GLM45_RAY_CLUSTER names."""
    described = os.environ.get(CLUSTER_ENV)
    if described:
        path = Path(described)
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ClusterError(f"{CLUSTER_ENV}={described}: {exc}; accepted: a JSON list in ray.nodes()'s shape") from None
        if not isinstance(data, list):
            raise ClusterError(f"{CLUSTER_ENV}={described}: not a list; accepted: a JSON list in ray.nodes()'s shape")
        return from_nodes(address, data, f"described in {path.name}")
    try:
        import ray  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise ClusterError(f"a Ray cluster was named ({address}) but Ray is not installed here: pip install 'pytest-glm45[ray]' "
                           "(the same Ray version as the cluster's)") from None  # fmt: skip
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
        nodes = ray.nodes()
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError and its own types
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {exc}; {start_commands()}") from None
    finally:
        with contextlib.suppress(Exception):  # nothing to undo when init failed
            ray.shutdown()  # disconnects this driver; the cluster keeps running
    return from_nodes(address, nodes, "ray")
