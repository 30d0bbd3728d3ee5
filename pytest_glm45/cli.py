"""`pytest-glm45`: the kit's console command.

    pytest-glm45 serve --model air-fp8 --plan tp8 --print   # the exact command the fixtures would run
    pytest-glm45 serve                                      # start the tiny server in the foreground
    pytest-glm45 tiny-model                                 # build the tiny model, print its directory
    pytest-glm45 inventory                                  # this host's GPUs, as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from pytest_glm45.matrix import Configuration
from pytest_glm45.recipe import cpu_cores, spec_for
from pytest_glm45.server import ServerError, ServerProcess
from pytest_glm45.settings import Settings, SettingsError, parse_tolerances, resolve_settings

#: The plugin's option names as this command spells them, for error messages.
CLI_FLAGS = {"--glm45-model": "--model", "--glm45-parallel": "--plan", "--glm45-strict-tools": "--strict",
             "--glm45-max-model-len": "--max-model-len", "--glm45-startup-timeout": "--startup-timeout",
             "--glm45-server-arg": "--server-arg"}  # fmt: skip


def _settings(args: argparse.Namespace) -> Settings:
    """The same resolution the plugin uses, from this command's options (one configuration)."""
    from pytest_glm45.inventory import gpu_count, read_inventory

    values = {"model": args.model, "gpus": args.gpus, "parallel": args.plan, "strict_tools": args.strict,
              "max_model_len": args.max_model_len, "server_args": args.server_arg, "startup_timeout": args.startup_timeout,
              "unrunnable": "skip"}  # fmt: skip
    try:
        return resolve_settings(values, detected_gpus=gpu_count, cpu_cores=len(cpu_cores()), rootdir=Path.cwd(),
                                inventory=read_inventory)  # fmt: skip
    except SettingsError as exc:
        text = str(exc)
        for plugin_flag, flag in CLI_FLAGS.items():
            text = text.replace(plugin_flag, flag)
        raise SystemExit(f"pytest-glm45 serve: {text}") from None


def _configuration(settings: Settings) -> Configuration:
    if len(settings.matrix) != 1:
        raise SystemExit(f"pytest-glm45 serve: one configuration at a time; these options make {len(settings.matrix)}: "
                         f"{', '.join(c.id for c in settings.matrix)}")  # fmt: skip
    return settings.matrix[0]


def cmd_serve(args: argparse.Namespace) -> int:
    """Start (or print) the server the fixtures would boot for one configuration."""
    settings = _settings(args)
    config = _configuration(settings)
    spec = spec_for(config, settings.server_args)
    if args.print:
        print(spec.shell_line(args.host, args.port or 8000))
        if config.skip_reason:
            print(f"# note: the kit would skip {config.id} on this host: {config.skip_reason}", file=sys.stderr)
        return 0
    if config.skip_reason:
        print(f"pytest-glm45: {config.id} cannot run here: {config.skip_reason}", file=sys.stderr)
        return 2
    api_key = os.environ.get("GLM45_API_KEY")
    log = Path(args.log or f"{config.id}.log")
    server = ServerProcess(spec, log, api_key=api_key, startup_timeout=settings.startup_timeout, port=args.port)
    print(f"pytest-glm45: starting {config.id}, log {log}", flush=True)
    try:
        server.start()
        print(f"pytest-glm45: {config.id} ready in {server.startup_seconds:.1f} s at {server.base_url} "
              f"(served name {spec.served_name}); Ctrl-C stops it", flush=True)  # fmt: skip
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while server.alive():
            time.sleep(1)
        print(f"pytest-glm45: the server exited with code {server.exit_code}; see {log}", file=sys.stderr)
        return 1
    except ServerError as exc:
        print(f"pytest-glm45: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def cmd_tiny_model(args: argparse.Namespace) -> int:
    """Build the tiny model (once per cache) and print its directory."""
    from pytest_glm45.tinymodel import ensure_tiny_model

    print(ensure_tiny_model(Path(args.cache_dir) if args.cache_dir else None).path)
    return 0


def cmd_inventory(args: argparse.Namespace) -> int:
    """Print this host's GPU inventory."""
    from pytest_glm45.inventory import read_inventory

    inv = read_inventory()
    print(json.dumps(inv.to_dict(), indent=2) if args.json else inv.summary())
    return 0


def cmd_preflight(args: argparse.Namespace) -> int:
    """Print the preflight verdict of every model at every plan this host allows."""
    from pytest_glm45.catalog import CATALOG
    from pytest_glm45.inventory import read_inventory
    from pytest_glm45.preflight import table

    inv = read_inventory()
    print(f"inventory: {inv.summary()}")
    models = [CATALOG[a] for a in (args.model.split(",") if args.model else ["air-fp8", "air-bf16", "fp8", "bf16"])]
    for config_id, verdict in table(models, inv, args.max_model_len, args.concurrency):
        print(f"{config_id:24} {verdict}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Print what changed between two reports; exit 1 on a regression."""
    from pytest_glm45 import compare, report

    try:
        tolerances = parse_tolerances(args.tolerance, "--tolerance")
        old, new = report.load(Path(args.old)), report.load(Path(args.new))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"pytest-glm45 compare: {exc}") from None
    comparison = compare.compare(old, new, tolerances, accept_known=args.accept_known)
    text = comparison.markdown()
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", "utf-8")
    return 1 if comparison.regressed else 0


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(prog="pytest-glm45", description="GLM-4.5 serving conformance kit")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="Start (or --print) the server the fixtures would boot for one configuration")
    serve.add_argument("--model", default="tiny", help="Alias, hub id or path. Default: tiny.")
    serve.add_argument("--plan", default="tp1", help="Parallel plan such as tp1, tp8, dp2-tp4. Default: tp1.")
    serve.add_argument("--gpus", default=None, help="GPUs; 0 = CPU engine. Default: those of this host.")
    serve.add_argument("--strict", choices=("on", "off"), default="on", help="VLLM_ENFORCE_STRICT_TOOL_CALLING. Default: on.")
    serve.add_argument("--max-model-len", default=None, help="Default: 8192 for tiny, 65536 otherwise.")
    serve.add_argument("--host", default="127.0.0.1", help="Only with --print (the kit itself binds 127.0.0.1). Default: 127.0.0.1.")
    serve.add_argument("--port", type=int, default=None, help="Default: a free port (8000 with --print).")
    serve.add_argument("--server-arg", action="append", help="Extra vLLM argument; repeatable.")
    serve.add_argument("--startup-timeout", default=None, help="Seconds. Default: 900.")
    serve.add_argument("--log", default=None, help="Log file. Default: <config id>.log.")
    serve.add_argument("--print", action="store_true", help="Print the command and its environment; start nothing.")
    serve.set_defaults(func=cmd_serve)

    tiny = sub.add_parser("tiny-model", help="Build the tiny GLM-4.5 model (once per cache) and print its directory")
    tiny.add_argument("--cache-dir", default=None)
    tiny.set_defaults(func=cmd_tiny_model)

    pre = sub.add_parser("preflight", help="Verdicts for every model and plan this host's GPUs allow")
    pre.add_argument("--model", default=None, help="Comma list of aliases. Default: air-fp8,air-bf16,fp8,bf16.")
    pre.add_argument("--max-model-len", type=int, default=65536, help="Default: 65536.")
    pre.add_argument("--concurrency", type=int, default=1, help="Sequences at max model length. Default: 1.")
    pre.set_defaults(func=cmd_preflight)

    cmp = sub.add_parser("compare", help="What changed between two run reports; exits 1 on a regression")
    cmp.add_argument("old", help="report.json of the reference run")
    cmp.add_argument("new", help="report.json of the run under test")
    cmp.add_argument("--tolerance", action="append", help="metric=fraction, repeatable (default: 10%% throughput, 15-25%% latency)")
    cmp.add_argument("--markdown", default=None, help="Also write the summary to this file (for a CI comment).")
    cmp.add_argument("--accept-known", action="store_true",
                     help="Pass the gate when every check that broke is a recorded known failure (read them first).")
    cmp.set_defaults(func=cmd_compare)

    inv = sub.add_parser("inventory", help="Print this host's GPU inventory")
    inv.add_argument("--json", action="store_true")
    inv.set_defaults(func=cmd_inventory)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The console command's entry point."""
    from pytest_glm45.inventory import InventoryError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except InventoryError as exc:
        raise SystemExit(f"pytest-glm45 {args.command}: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
