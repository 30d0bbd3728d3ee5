"""The files a run's settings name, each read when the settings are resolved, before anything boots: the
known-failure directories (every vllm-*.toml in them), the thresholds file and a parity reference. A broken one is a
usage error naming the file and what is accepted, not a failure found after a boot of many minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_glm45.settings import SettingsError, _split


def parity_reference(value: Any) -> Path | None:
    """--glm45-parity-reference: an existing file that holds parity recordings, checked before anything boots."""
    if not value:
        return None
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise SettingsError("--glm45-parity-reference", str(value), "accepted: the path of an existing report.json or parity recording")
    from pytest_glm45.measure.parity import load_references

    try:
        load_references(path)
    except ValueError as exc:
        raise SettingsError("--glm45-parity-reference", str(value), str(exc)) from None
    return path


def existing_file(option: str, value: Any) -> Path | None:
    """An option's TOML file (a thresholds file), which must exist and parse; None when not given."""
    if not value:
        return None
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise SettingsError(option, str(value), "accepted: the path of an existing TOML file")
    parse_thresholds(option, path)
    return path


def parse_thresholds(option: str, path: Path) -> None:
    """A thresholds file is read whole before anything boots: its [[threshold]] entries (throughput) and its
    [[parity]] entries (logprob parity), which the kit otherwise reads only after a boot."""
    from pytest_glm45.measure import thresholds
    from pytest_glm45.measure.parity import thresholds_from_file

    try:
        thresholds.load(path)
        thresholds_from_file(path)
    except (ValueError, TypeError, AttributeError) as exc:  # ThresholdsError is a ValueError, as is a TOML error
        raise SettingsError(option, str(path), f"the file does not parse ({exc})") from None


def known_failures_dir(value: Any) -> Path | tuple[Path, ...] | None:
    """--glm45-known-failures: existing directories (or `shipped`, the kit's own), in layers (known_failures.directories):
    one directory as a Path, several as a tuple; None when not given (the shipped files). Every vllm-*.toml of the directories in use is parsed now, before anything
    boots: the session reads the one of the vLLM version it finds only after a boot, which can take 15 minutes (a draft
    that nobody reviewed is refused here too)."""
    from pytest_glm45.records import known_failures

    dirs = known_failures.directories(_split(value)) if _split(value) else None
    missing = [str(d) for d in dirs or () if not d.is_dir()]
    if missing:
        raise SettingsError("--glm45-known-failures", ", ".join(missing),
                            "accepted: the path of a directory of vllm-<version>.toml files, or several in layers (a "
                            "comma list or the option repeated; later ones over earlier ones; shipped = the kit's own)")  # fmt: skip
    for directory in dirs or (known_failures.default_dir(),):
        for path in sorted(directory.glob("vllm-*.toml")):
            try:
                known_failures.parse(path.read_text("utf-8"), str(path))
                known_failures.load(path.name.removeprefix("vllm-").removesuffix(".toml"), path.parent)  # its [pins] too
            except (OSError, ValueError, TypeError, AttributeError) as exc:  # KnownFailuresError is a ValueError
                raise SettingsError("--glm45-known-failures", str(directory),
                                    f"{exc}; accepted: files of the shape pytest_glm45/records/known_failures.py documents") from None  # fmt: skip
    return dirs[0] if dirs is not None and len(dirs) == 1 else dirs
