"""Every command in the README and the GPU and CI docs is one the kit accepts, on the box it is written for.

The fenced `bash` blocks of README.md, docs/gpu.md and docs/ci/README.md are parsed into commands. `pytest` commands
go through the plugin's own options and `resolve_settings`: GPU commands (a real model) against a described 8 x H100
box (tests/fixtures/inventory-8xH100.json) and, for pipelines over hosts, two such hosts as a Ray cluster; tiny-model
commands on the CPU engine. Every configuration they name must pass preflight. `pytest-glm45` commands go through
the command's argument parser; `preflight`, `serve --print` of a real model, and `compare`/`plans` of files that
exist are run, and must exit as the line's `# exit N` comment says (0 when it says nothing). The CI scripts' commands
use only the variables and options the scripts document, and their GLM45_PYTEST_ARGS pass as pytest commands do.
Anything else must be a program on the list below: a new kind of command gets a check, or a place on the list.
Also: every option the plugin registers is in the README's Options table, and the table names no other.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pytest_glm45.catalog import CATALOG
from pytest_glm45.cli import build_parser
from pytest_glm45.inventory import from_file
from pytest_glm45.plugin import OPTIONS
from pytest_glm45.settings import parse_tolerances, resolve_settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "docs" / "ci" / "README.md"]
H100X8 = ROOT / "tests" / "fixtures" / "inventory-8xH100.json"
#: Programs the docs run that the kit does not own: installs, shells, Ray, git. Checked by nobody here.
OTHER_PROGRAMS = {"pip", "tox", ".", "source", "apt-get", "ray", "cp", "git", "cd", "huggingface-cli", "export", "mkdir"}
#: pytest's own options the docs use (taking a value or not), beside the plugin's.
PYTEST_VALUE_FLAGS = ("-k", "-m", "-n", "-p", "--junitxml", "--benchmark-json", "--hypothesis-profile", "--durations")
PYTEST_BARE_FLAGS = ("-x", "-q", "-v", "--co", "--collect-only")
SCRIPTS = {"upgrade-gate.sh", "box-acceptance.sh", "vllm-versions.sh"}


@dataclass
class Command:
    """One command of a fenced block: where it is, its environment assignments, its words, its `# exit N`."""

    where: str
    env: dict[str, str]
    argv: list[str]
    expected_exit: int = 0
    line: str = ""


def _comment(line: str) -> tuple[str, str]:
    """(code, comment): the line split at its first `#` outside quotes that starts a word."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], line[i + 1 :]
    return line, ""


def commands(path: Path) -> list[Command]:
    """The commands of a file's fenced bash blocks, continuation lines joined, split at `&&`, `;` and `|`."""
    out: list[Command] = []
    text = path.read_text("utf-8")
    for block in re.finditer(r"^```bash\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
        first_line = text[: block.start()].count("\n") + 2
        logical: list[tuple[int, str]] = []
        pending = ""
        for n, raw in enumerate(block.group(1).splitlines()):
            code, comment = _comment(raw)
            if code.rstrip().endswith("\\"):
                pending += code.rstrip()[:-1] + " "
                continue
            logical.append((first_line + n, pending + code + (" #" + comment if comment else "")))
            pending = ""
        for number, line in logical:
            code, comment = _comment(line)
            expected = re.search(r"\bexit (\d)\b", comment)
            lexer = shlex.shlex(code, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            words, segment = list(lexer), []
            for word in [*words, ";"]:
                if word in (";", "&&", "||", "|"):
                    if segment:
                        env = {}
                        while segment and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", segment[0]):
                            key, _, value = segment.pop(0).partition("=")
                            env[key] = value
                        if segment:
                            where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                            out.append(Command(f"{where}:{number}", env, segment,
                                               int(expected.group(1)) if expected else 0, line.strip()))  # fmt: skip
                    segment = []
                else:
                    segment.append(word)
    return out


@dataclass
class Box:
    """What the checks judge against: placeholders for files the docs name, a described cluster."""

    tmp: Path
    report: Path = field(init=False)

    def __post_init__(self) -> None:
        self.report = ROOT / "docs" / "measurements" / "report-vllm-0.32.0.json"
        nodes = [{"NodeID": f"n{i}", "Alive": True, "NodeManagerAddress": f"10.0.0.{i + 1}",
                  "Resources": {"CPU": 128.0, "GPU": 8.0, "accelerator_type:H100": 1.0}} for i in range(2)]  # fmt: skip
        (self.tmp / "cluster.json").write_text(json.dumps(nodes))
        (self.tmp / "thresholds.toml").write_text("")

    def file(self, option: str, value: str) -> str:
        """An existing file for an option whose value the docs wrote as an example path."""
        if Path(value).is_file() or (ROOT / value).is_file():
            return str(ROOT / value) if (ROOT / value).is_file() else value
        return {"parity_reference": str(ROOT / "tests" / "fixtures" / "parity-fp8-tp8.json"),
                "compare_to": str(self.report), "thresholds": str(self.tmp / "thresholds.toml")}[option]  # fmt: skip

    def model(self, value: str) -> str:
        """A `--glm45-model` list with each local path the docs name made into a checkpoint directory here, whose
        config.json describes what its name says (`/models/GLM-4.5-Air-FP8`)."""
        out = []
        for item in value.split(","):
            alias, sep, where = item.rpartition("=") if "=" in item else ("", "", item)
            if where.startswith("/") and not Path(where).exists():
                name = Path(where).name.lower()
                local = self.tmp / "models" / Path(where).name
                local.mkdir(parents=True, exist_ok=True)
                air = "air" in name
                config = {"architectures": ["Glm4MoeForCausalLM"], "num_hidden_layers": 46 if air else 92,
                          "hidden_size": 4096 if air else 5120,
                          "max_position_embeddings": 202752 if ("4.6" in name or "4.7" in name) else 131072,
                          **({"quantization_config": {"quant_method": "fp8"}} if "fp8" in name else {})}  # fmt: skip
                (local / "config.json").write_text(json.dumps(config))
                where = str(local)
            out.append(f"{alias}{sep}{where}")
        return ",".join(out)

    def directories(self, value: str) -> str:
        made = []
        for part in (p.strip() for p in value.split(",")):
            if part == "shipped" or (ROOT / part).is_dir():
                made.append(part if part == "shipped" else str(ROOT / part))
            else:
                (self.tmp / "kf" / part).mkdir(parents=True, exist_ok=True)
                made.append(str(self.tmp / "kf" / part))
        return ",".join(made)


def _pytest_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pytest", add_help=False, exit_on_error=False)
    for flag, _ini, dest, _help, kind in OPTIONS:
        parser.add_argument(flag, dest=dest, action="append" if kind == "append" else "store")
    for flag in PYTEST_VALUE_FLAGS:
        parser.add_argument(flag)
    for flag in PYTEST_BARE_FLAGS:
        parser.add_argument(flag, action="store_true")
    parser.add_argument("paths", nargs="*")
    return parser


def check_pytest(cmd: Command, args: list[str], box: Box, gpu: bool | None = None) -> str:
    """The plugin's options and settings for a documented pytest command; the engine it was written for."""
    try:
        parsed = _pytest_parser().parse_args(args)
    except (argparse.ArgumentError, SystemExit) as exc:
        raise AssertionError(f"{cmd.where}: pytest does not accept {args}: {exc}") from None
    for p in parsed.paths:
        assert (ROOT / p.split("::")[0]).exists(), f"{cmd.where}: {p} is not a path of this repository"
    values = {dest.removeprefix("glm45_"): getattr(parsed, dest) for _f, _i, dest, _h, _k in OPTIONS}
    for option in ("parity_reference", "compare_to", "thresholds"):
        if values[option]:
            values[option] = box.file(option, values[option])
    if values["model"]:
        values["model"] = box.model(values["model"])
    if values["known_failures"]:
        values["known_failures"] = [box.directories(v) for v in values["known_failures"]]
    models = [m.split("=")[0].strip() for m in (values["model"] or "tiny").split(",")]
    real = gpu if gpu is not None else not all(CATALOG.get(m) is not None and CATALOG[m].is_tiny for m in models)
    env = {**os.environ, "GLM45_RAY_CLUSTER": str(box.tmp / "cluster.json")}
    old = dict(os.environ)
    os.environ.update(env)
    try:
        settings = resolve_settings(values, detected_gpus=lambda: 8 if real else 0, cpu_cores=16, rootdir=box.tmp,
                                    inventory=(lambda: from_file(H100X8)) if real else None)  # fmt: skip
    except ValueError as exc:
        raise AssertionError(f"{cmd.where}: {cmd.line}\n  is refused: {exc}") from None
    finally:
        os.environ.clear()
        os.environ.update(old)
    refused = [f"{c.id}: {c.skip_reason}" for c in settings.matrix if c.skip_reason]
    assert not refused or values["unrunnable"] == "skip", f"{cmd.where}: {cmd.line}\n  cannot run: {refused}"
    return "pytest on 8 x H100" if real and not settings.base_url else "pytest on the CPU engine" if not real else "pytest by URL"


def check_cli(cmd: Command, args: list[str], box: Box) -> str:
    """`pytest-glm45 ...`: parsed by the command's parser; run where it needs no server and its files exist."""
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit:
        raise AssertionError(f"{cmd.where}: pytest-glm45 does not accept {args}") from None
    files = [a for a in args if a.endswith(".json") and not a.startswith("-")]
    runs = (parsed.command == "preflight" or (parsed.command == "serve" and parsed.print and not CATALOG.get(parsed.model, CATALOG["fp8"]).is_tiny)
            or (parsed.command in ("compare", "plans") and files and all((ROOT / f).is_file() for f in files)))  # fmt: skip
    if not runs:
        return f"pytest-glm45 {parsed.command} (parsed)"
    env = {**os.environ, "GLM45_INVENTORY": str(H100X8), "GLM45_RAY_CLUSTER": str(box.tmp / "cluster.json"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "pytest_glm45.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == cmd.expected_exit, (f"{cmd.where}: {cmd.line}\n  exit {done.returncode}, the docs say "
                                                  f"{cmd.expected_exit}\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}")  # fmt: skip
    return f"pytest-glm45 {parsed.command} (run)"


def documented_variables(script: Path) -> set[str]:
    return set(re.findall(r"^#\s+([A-Z][A-Z0-9_]+)\s", script.read_text("utf-8"), re.MULTILINE))


def check_script(cmd: Command, name: str, args: list[str], box: Box) -> str:
    script = ROOT / "docs" / "ci" / name
    undocumented = [k for k in cmd.env if k.startswith("GLM45_") and k not in documented_variables(script)]
    assert not undocumented, f"{cmd.where}: {name} does not document {undocumented}"
    if name == "upgrade-gate.sh":
        versions = [a for a in args if not a.startswith("-")]
        assert set(args) - set(versions) <= {"--accept-known", "--compare-only"} and len(versions) == 2, f"{cmd.where}: {args}"
        assert all(re.fullmatch(r"\d+(\.\d+)*", v) for v in versions), f"{cmd.where}: {versions}"
    elif name == "box-acceptance.sh":
        assert not args, f"{cmd.where}: box-acceptance.sh takes no arguments, got {args}"
    if "GLM45_PYTEST_ARGS" in cmd.env:
        gpu = name == "box-acceptance.sh" or cmd.env.get("GLM45_VLLM_PACKAGE") == "vllm"
        check_pytest(cmd, shlex.split(cmd.env["GLM45_PYTEST_ARGS"]), box, gpu=gpu)
    if "GLM45_TOLERANCE" in cmd.env:
        parse_tolerances(cmd.env["GLM45_TOLERANCE"], "GLM45_TOLERANCE")
    return name


def check(cmd: Command, box: Box) -> str:
    program, args = cmd.argv[0], cmd.argv[1:]
    if program in ("python", "python3") and args[:2] == ["-m", "pytest"]:
        program, args = "pytest", args[2:]
    if program == "bash" and args and args[0].endswith(".sh"):
        program, args = args[0], args[1:]
    if program == "pytest":
        return check_pytest(cmd, args, box)
    if program == "pytest-glm45":
        return check_cli(cmd, args, box)
    if Path(program).name in SCRIPTS:
        return check_script(cmd, Path(program).name, args, box)
    if program in ("python", "python3"):
        assert args[:2] == ["-m", "venv"] or (ROOT / args[0]).is_file(), f"{cmd.where}: {cmd.line}"
        return "python"
    assert program in OTHER_PROGRAMS, f"{cmd.where}: `{cmd.line}`: {program} is neither checked here nor on OTHER_PROGRAMS"
    return "other"


def test_every_documented_command_is_accepted_on_the_box_it_is_written_for(tmp_path: Path) -> None:
    box = Box(tmp_path)
    kinds: Counter[str] = Counter()
    for doc in DOCS:
        found = commands(doc)
        assert found or (doc.parent.name == "docs" and doc.name != "gpu.md"), doc  # the guides show commands
        for cmd in found:
            kinds[check(cmd, box)] += 1
    print(dict(kinds))
    assert kinds["pytest on 8 x H100"] >= 10 and kinds["pytest-glm45 preflight (run)"] >= 3
    assert kinds["upgrade-gate.sh"] >= 3 and kinds["box-acceptance.sh"] >= 2


def test_the_checker_catches_what_the_issue_found(tmp_path: Path) -> None:
    """The README's old GPU example (fp8 dp2-tp4 on 8 x H100) and an unknown flag are refused; the comment's exit counts."""
    box = Box(tmp_path)
    doc = tmp_path / "doc.md"
    for text, message in (
        ("pytest suites --glm45-model air-fp8,fp8 --glm45-parallel tp8,dp2-tp4", "glm45-fp8-dp2-tp4: preflight: the FP8 weights do not fit"),
        ("pytest suites --glm45-modle air-fp8", "pytest does not accept"),
        ("pytest-glm45 preflight --model fp8 --plan tp4", "exit 1, the docs say 0"),
        ("GLM45_PYTEST_ARG=x docs/ci/upgrade-gate.sh 0.31.0 0.32.0", "does not document ['GLM45_PYTEST_ARG']"),
        ("rm -rf /", "neither checked here nor on OTHER_PROGRAMS"),
    ):  # fmt: skip
        doc.write_text(f"```bash\n{text}\n```\n")
        (cmd,) = commands(doc)
        with pytest.raises(AssertionError, match=re.escape(message)):
            check(cmd, box)


def test_continuation_lines_comments_and_assignments_are_read(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("```bash\nA=1 B='x y' pytest-glm45 compare a.json \\\n  b.json '#kept'   # exit 1\n"
                   "pip install x && tox -e kit  # no exit here\n```\n```toml\nnot = 'a command'\n```\n")
    found = commands(doc)
    assert [(c.env, c.argv, c.expected_exit) for c in found] == [
        ({"A": "1", "B": "x y"}, ["pytest-glm45", "compare", "a.json", "b.json", "#kept"], 1),
        ({}, ["pip", "install", "x"], 0), ({}, ["tox", "-e", "kit"], 0)]  # fmt: skip


def test_every_plugin_option_is_in_the_readmes_table_and_no_other() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    options = readme.split("## Options", 1)[1]
    table = options[options.index("| flag | default | what |") :].split("\n\n", 1)[0]
    documented = set(re.findall(r"`(--(?:glm45-[a-z-]+|gpus))`", table))
    registered = {flag for flag, *_ in OPTIONS}
    assert registered - documented == set(), f"options missing from the README's table: {sorted(registered - documented)}"
    assert documented - registered == set(), f"the README's table names options that do not exist: {sorted(documented - registered)}"


def test_the_model_option_names_every_alias() -> None:
    help_text = next(h for flag, _i, _d, h, _k in OPTIONS if flag == "--glm45-model")
    assert all(alias in help_text for alias in CATALOG), [a for a in CATALOG if a not in help_text]


def test_the_gpu_template_bounds_points_a_profile_runs(tmp_path: Path) -> None:
    """Uncommented, the template parses, and every entry names a shape, a batch and a configuration that runs."""
    from pytest_glm45 import thresholds
    from pytest_glm45.loadgen import profile_points
    from pytest_glm45.records.ids import matches

    path = ROOT / "pytest_glm45" / "thresholds" / "gpu-template.toml"
    body = "\n".join(line[2:] if line.startswith("# ") and not line.startswith("#  ") else line
                     for line in path.read_text("utf-8").splitlines() if line.startswith(("# [", "# ", "#[")))  # fmt: skip
    entries_text = body[body.index("[[threshold]]"):]
    copy = tmp_path / "gpu-template.toml"
    copy.write_text(entries_text)
    entries = thresholds.load(copy)
    assert len(entries) == 3
    points = {(s.name, b) for profile in ("standard", "full") for s, b in profile_points(profile, "gpu")}
    ids = [f"{info.label}-{plan}" for info in CATALOG.values() for plan in ("tp1", "tp2", "tp4", "tp8", "tp8-ep")]
    for entry in entries:
        assert any(matches(s, entry.shape) and (entry.batch == "*" or str(b) == entry.batch) for s, b in points), entry
        assert any(matches(i, entry.config) for i in ids), entry
