"""The GPU inventory: what accelerators this host has, read through NVML or nvidia-smi.

No torch, no vLLM: NVML through `nvidia-ml-py` (import name `pynvml`) when it is installed,
else `nvidia-smi`'s CSV query, else an empty inventory (a CPU host).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: A JSON file describing the GPUs to assume instead of reading them (`from_file`).
INVENTORY_ENV = "GLM45_INVENTORY"


class InventoryError(ValueError):
    """A described inventory (GLM45_INVENTORY) that cannot be read."""


@dataclass(frozen=True)
class Gpu:
    """One GPU as the driver reports it."""

    index: int
    name: str
    memory_bytes: int
    compute_capability: tuple[int, int] | None
    uuid: str = ""
    nvlink_links: int = 0

    @property
    def memory_gib(self) -> float:
        """Memory in GiB."""
        return self.memory_bytes / 2**30


@dataclass(frozen=True)
class Inventory:
    """All GPUs of the host, with driver and CUDA versions; `source` says how it was read."""

    gpus: tuple[Gpu, ...] = ()
    driver_version: str | None = None
    cuda_version: str | None = None
    source: str = "none"
    notes: tuple[str, ...] = field(default=())

    @property
    def count(self) -> int:
        """How many GPUs the host has."""
        return len(self.gpus)

    def summary(self) -> str:
        """One line for the report header."""
        if not self.gpus:
            return "no GPU (CPU engine)"
        names: dict[str, int] = {}
        for g in self.gpus:
            names[g.name] = names.get(g.name, 0) + 1
        kinds = ", ".join(f"{n} x {name}" for name, n in names.items())
        g0 = self.gpus[0]
        cc = f"cc {g0.compute_capability[0]}.{g0.compute_capability[1]}" if g0.compute_capability else "cc ?"
        link = f", NVLink x{g0.nvlink_links}" if g0.nvlink_links else ""
        return (
            f"{kinds} ({g0.memory_gib:.0f} GiB, {cc}{link}), driver {self.driver_version or '?'}, "
            f"CUDA {self.cuda_version or '?'} [{self.source}]"
        )

    def to_dict(self) -> dict[str, Any]:
        """The inventory as JSON-ready data (for reports)."""
        return asdict(self)


def from_file(path: Path) -> Inventory:
    """An inventory described in a JSON file (`Inventory.to_dict`'s shape: `gpus` with index, name,
    memory_bytes, compute_capability, ...): a host you do not have, for preflight and scheduling dry runs."""
    try:
        data = json.loads(path.read_text("utf-8"))
        gpus = tuple(Gpu(**{**g, "compute_capability": tuple(g["compute_capability"]) if g.get("compute_capability") else None})
                     for g in data.get("gpus", []))  # fmt: skip
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise InventoryError(f"{INVENTORY_ENV}={path}: not an inventory file ({exc}); expected JSON with a list "
                         '"gpus" of {"index", "name", "memory_bytes", "compute_capability": [9, 0]}') from None  # fmt: skip
    return Inventory(gpus, data.get("driver_version"), data.get("cuda_version"), f"file {path}")


def read_inventory() -> Inventory:
    """Read the host's GPUs: the file GLM45_INVENTORY names when set, else NVML, else nvidia-smi, else none."""
    described = os.environ.get(INVENTORY_ENV)
    if described:
        return from_file(Path(described))
    notes: list[str] = []
    try:
        return _from_nvml()
    except ImportError:
        notes.append("nvidia-ml-py is not installed")
    except Exception as exc:  # NVML raises its own error types; any of them means "try the CLI"
        notes.append(f"NVML: {exc}")
    if shutil.which("nvidia-smi"):
        try:
            inv = _from_nvidia_smi()
            return Inventory(inv.gpus, inv.driver_version, inv.cuda_version, inv.source, tuple(notes))
        except (subprocess.SubprocessError, OSError, ValueError) as exc:
            notes.append(f"nvidia-smi: {exc}")
    return Inventory(source="none", notes=tuple(notes))


def _from_nvml() -> Inventory:
    import pynvml

    pynvml.nvmlInit()
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = None
        with contextlib.suppress(Exception):
            v = pynvml.nvmlSystemGetCudaDriverVersion_v2()
            cuda = f"{v // 1000}.{(v % 1000) // 10}"
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            cc = None
            with contextlib.suppress(Exception):
                cc = tuple(pynvml.nvmlDeviceGetCudaComputeCapability(h))
            links = 0
            for link in range(18):  # NVML_NVLINK_MAX_LINKS on Hopper
                try:
                    if pynvml.nvmlDeviceGetNvLinkState(h, link):
                        links += 1
                except Exception:
                    break
            gpus.append(
                Gpu(
                    index=i,
                    name=_text(pynvml.nvmlDeviceGetName(h)),
                    memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                    compute_capability=cc,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(h)),
                    nvlink_links=links,
                )
            )
        return Inventory(tuple(gpus), driver, cuda, "nvml")
    finally:
        pynvml.nvmlShutdown()


def _from_nvidia_smi() -> Inventory:
    fields = "index,name,memory.total,compute_cap,uuid,driver_version"
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    gpus, driver = [], None
    for line in out.strip().splitlines():
        idx, name, mem_mib, cc, uuid, driver = (p.strip() for p in line.split(","))
        major, _, minor = cc.partition(".")
        gpus.append(Gpu(int(idx), name, int(float(mem_mib)) * 2**20, (int(major), int(minor or 0)), uuid))
    cuda = None
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        head = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        if "CUDA Version:" in head:
            cuda = head.split("CUDA Version:")[1].split()[0]
    return Inventory(tuple(gpus), driver, cuda, "nvidia-smi")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def gpu_count() -> int:
    """How many GPUs this host has (0 on a CPU host)."""
    return read_inventory().count
