"""`heat-platform`: the command line of the platform.

Each subcommand is a thin shell over library code; heavy imports happen inside the handlers so
that `heat-platform --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from heat_platform.paths import PlatformPaths

Handler = Callable[[argparse.Namespace, PlatformPaths], int]


def _init(args: argparse.Namespace, paths: PlatformPaths) -> int:
    from heat_platform.instance import prepare_instance
    from heat_platform.local import create_storage

    dagster_home = prepare_instance(paths)
    create_storage(paths)
    print(f"platform home: {paths.home}")
    print(f"DAGSTER_HOME:  {dagster_home}")
    print(f"landing zone:  {paths.landing}")
    return 0


def _simulate(args: argparse.Namespace, paths: PlatformPaths) -> int:
    from heat_platform.heat.synthetic import SCENARIOS

    if args.list or not args.scenario:
        for name, scenario in SCENARIOS.items():
            shifts = ", ".join(scenario.shifts) or "none"
            print(f"{name:18s} {scenario.spec.description}  (shifts: {shifts})")
        return 0
    from heat_platform.simulate import simulate_to_landing

    options = {}
    if args.layout:
        options["layout"] = args.layout
    if args.sensors:
        options["sensors"] = tuple(args.sensors)
    if args.times:
        options["n_times"] = args.times
    if args.noise is not None:
        options["noise_sigma"] = args.noise
    if args.coordinates:
        import numpy as np

        options["layout"] = "given"
        options["coordinates"] = np.loadtxt(args.coordinates, delimiter=",", ndmin=2)[:, :2]
    landing = Path(args.landing).resolve() if args.landing else paths.landing
    written = simulate_to_landing(
        landing, args.scenario, experiment=args.experiment, batch=args.batch, seed=args.seed,
        shift=args.shift, fmt=args.format, force=args.force, **options,
    )
    print(written)
    return 0


def _demo(args: argparse.Namespace, paths: PlatformPaths) -> int:
    from heat_platform.demo import run_demo
    from heat_platform.instance import prepare_instance

    prepare_instance(paths)
    return run_demo(paths, timeout_s=args.timeout)


def _champion_job(job_name: str, action: str, experiment: str, version: str | None,
                  actor: str, paths: PlatformPaths) -> int:
    """Run the approve/rollback job in this process against the platform's instance."""
    from heat_platform.instance import prepare_instance

    prepare_instance(paths)
    import dagster as dg

    from heat_platform.assets.gate import champion_run_config
    from heat_platform.definitions import build_definitions
    from heat_platform.names import ACTOR, TRIGGER

    with dg.DagsterInstance.get() as instance:
        if experiment not in instance.get_dynamic_partitions("experiments"):
            print(f"error: unknown experiment {experiment!r}", file=sys.stderr)
            return 2
        result = build_definitions(paths).resolve_job_def(job_name).execute_in_process(
            instance=instance, partition_key=experiment, raise_on_error=False,
            run_config=champion_run_config(action, version, actor),
            tags={TRIGGER: f"cli:{action}", ACTOR: actor})
    if result.success:
        champion = result.output_for_node("champion_model")
        print(f"{action}: {experiment} champion is now {champion.model_name} v{champion.version} "
              f"(run {result.run_id})")
        return 0
    for event in result.get_step_failure_events():
        failure = event.step_failure_data
        reason = failure.user_failure_data.description if failure.user_failure_data else None
        print(f"error: {reason or failure.error.message}", file=sys.stderr)
    return 1


def _approve(args: argparse.Namespace, paths: PlatformPaths) -> int:
    return _champion_job("approve_model", "approve", args.experiment, args.version, args.actor, paths)


def _rollback(args: argparse.Namespace, paths: PlatformPaths) -> int:
    return _champion_job("rollback_model", "rollback", args.experiment, args.to_version,
                         args.actor, paths)


def _registry(paths: PlatformPaths):
    """The model registry of the platform on ``paths`` (MLflow and the catalog)."""
    from heat_platform.data.catalog import Catalog
    from heat_platform.models.mlflow_store import MlflowStore
    from heat_platform.models.registry import ModelRegistry
    from heat_platform.settings import PlatformSettings

    store = MlflowStore(paths.mlflow_tracking_uri, str(paths.mlflow_artifacts),
                        PlatformSettings.load().mlflow_ui_url)
    return ModelRegistry(store, Catalog(paths.catalog_url))


def _audit(args: argparse.Namespace, paths: PlatformPaths) -> int:
    if args.verify or args.repair:
        return _verify_audit(args, paths)
    from heat_platform.data.catalog import Catalog

    for entry in reversed(Catalog(paths.catalog_url).audit_trail(args.experiment, args.limit)):
        phase = f"/{entry.phase}" if entry.phase else ""
        print(f"{entry.at:%Y-%m-%d %H:%M:%S}  #{entry.id:<4d} {entry.experiment:16s} "
              f"{entry.action + phase:18s} {entry.actor:10s} v{entry.from_version or '-'} -> "
              f"v{entry.to_version or '-'}  {'; '.join(entry.reasons)}")
    return 0


def _catalog_grant(args: argparse.Namespace, paths: PlatformPaths) -> int:
    from heat_platform.data.catalog import Catalog

    try:
        statements = Catalog(paths.catalog_url).grant_platform_role(args.role)
    except ValueError as refused:
        print(f"catalog-grant: {refused}", file=sys.stderr)
        return 2
    print("\n".join(f"{statement};" for statement in statements))
    return 0


def _verify_audit(args: argparse.Namespace, paths: PlatformPaths) -> int:
    """Check (and with --repair first close interrupted champion moves) every experiment's
    audit log; 1 when any check fails."""
    registry = _registry(paths)
    audit_log = registry.audit_log
    experiments = [args.experiment] if args.experiment else audit_log.experiments()
    failed = 0
    for experiment in experiments:
        if args.repair:
            for entry in registry.reconcile(experiment):
                print(f"{experiment}: recorded #{entry.id} {entry.action}/{entry.phase} "
                      f"v{entry.to_version}: {entry.reasons[0]}")
        check = audit_log.verify(experiment)
        if check.ok:
            print(f"{experiment}: OK: {check.chain.head}; recorded head "
                  f"{check.recorded_head or 'none'}")
        else:
            failed += 1
            print(f"{experiment}: FAILED")
        for problem in check.problems:
            print(f"  - {problem}")
        for note in check.notes:
            print(f"  note: {note}")
    if not experiments:
        print("the audit log is empty")
    return 1 if failed else 0


def _lineage(args: argparse.Namespace, paths: PlatformPaths) -> int:
    import json

    from heat_platform.audit import report
    from heat_platform.audit.lineage import LineageError, build_lineage, resolve, verify

    registry = _registry(paths)
    try:
        lineage = build_lineage(resolve(args.ref, paths, experiment=args.experiment), paths,
                                registry)
    except LineageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.verify:
        verify(lineage, paths, registry)
    print(json.dumps(lineage.as_dict(), indent=2) if args.json else report.text(lineage))
    return 1 if lineage.verification else 0


def _settings(args: argparse.Namespace, paths: PlatformPaths) -> int:
    from heat_platform.settings import PlatformSettings, ServingSettings, markdown_table

    if args.markdown:
        print(markdown_table())
        return 0
    for settings in (PlatformSettings.load(), ServingSettings.load()):
        for name, value in settings:  # secrets print as **********
            print(f"{type(settings).__name__}.{name} = {value}")
    return 0


def _serve(args: argparse.Namespace, paths: PlatformPaths) -> int:
    from heat_platform.serving.proxy import ProxyMissing, find_binary
    from heat_platform.serving.rollout import AlreadyServing, serve
    from heat_platform.settings import ServingSettings

    settings = ServingSettings.load()  # the environment, then the .env file
    if settings.api_key is None and not _loopback(args.host) and not args.insecure:
        print(f"error: refusing to serve on {args.host} without an API key: set "
              "HEAT_SERVING_API_KEY (environment or .env), or pass --insecure to serve "
              "everyone who can reach this host", file=sys.stderr)
        return 2
    try:
        find_binary()
        serve(paths, host=args.host, port=args.port, poll_seconds=args.poll, settings=settings)
    except (ProxyMissing, AlreadyServing) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _loopback(host: str) -> bool:
    """Is ``host`` reachable from this machine only (127.0.0.0/8, ::1, localhost)?"""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _mlflow_ui(args: argparse.Namespace, paths: PlatformPaths) -> int:
    import signal

    from heat_platform.local import MlflowUi
    from heat_platform.settings import PlatformSettings

    ui = MlflowUi(paths, args.url or PlatformSettings.load().mlflow_ui_url)

    def stop(signum, frame):  # `make dev` ends it with SIGTERM when `dagster dev` stops
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        ui.start().wait_ready()
        print(f"MLflow UI on {ui.url} (store {paths.mlflow_tracking_uri}); log {ui.log_path}",
              flush=True)
        ui.process.wait()
        ui.check_alive()
    except KeyboardInterrupt:
        pass
    finally:
        ui.stop()
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    parser = argparse.ArgumentParser(
        prog="heat-platform",
        description="Operate the heat-platform: synthetic experiments, the Dagster pipeline, "
        "model promotion and serving.",
    )
    parser.add_argument(
        "--home",
        help="platform home directory (default: $HEAT_PLATFORM_HOME or ./data)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    handlers: dict[str, Handler] = {}

    commands.add_parser(
        "init", help="create the platform directories and the local Dagster instance",
        description="Create the platform home (landing zone, storage, DAGSTER_HOME with "
        "dagster.yaml, MLflow and BentoML stores). Idempotent.",
    )
    handlers["init"] = _init

    simulate = commands.add_parser(
        "simulate", help="write a synthetic measurement batch into the landing zone",
        description="Simulate one measurement batch of a built-in scenario (deterministic for a "
        "seed) and write it, with the experiment's problem.yaml, into "
        "<landing>/<experiment>/. Use --list to see the scenarios.",
    )
    simulate.add_argument("scenario", nargs="?", help="built-in scenario (see --list)")
    simulate.add_argument("--list", action="store_true", help="list the built-in scenarios")
    simulate.add_argument("--experiment", help="experiment name (default: the scenario's name)")
    simulate.add_argument("--batch", help="batch name (default: b<seed>[-<shift>])")
    simulate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    simulate.add_argument("--shift", help="simulate a changed world: 'material' (another a(x, y)) "
                          "or 'miscalibration' (biased sensors)")
    simulate.add_argument("--layout", choices=["grid", "random", "pinnacle"],
                          help="sensor layout (default: the scenario's)")
    simulate.add_argument("--sensors", type=int, nargs=2, metavar=("NX", "NY"),
                          help="sensor grid shape (random layout: NX*NY sensors)")
    simulate.add_argument("--coordinates", help="CSV file of sensor coordinates x,y (no header)")
    simulate.add_argument("--times", type=int, help="number of measurement times")
    simulate.add_argument("--noise", type=float, help="Gaussian noise std (default: the spec's)")
    simulate.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    simulate.add_argument("--landing", help="landing zone (default: <home>/landing)")
    simulate.add_argument("--force", action="store_true",
                          help="replace an existing, different problem.yaml")
    handlers["simulate"] = _simulate

    demo = commands.add_parser(
        "demo", help="run the whole asset graph end to end on a built-in synthetic experiment",
        description="Land synthetic batches, start the Dagster daemon, let the sensors and "
        "automation run the pipeline, and print what happened. Idempotent.",
    )
    demo.add_argument("--timeout", type=float, default=900.0,
                      help="seconds to wait for each stage (default 900)")
    handlers["demo"] = _demo

    approve = commands.add_parser(
        "approve", help="complete a promotion the gate left pending (approval mode)",
        description="Promote a version the gate marked pending_approval, audit-log it and "
        "redeploy (runs the approve_model Dagster job).")
    approve.add_argument("--experiment", required=True)
    approve.add_argument("--version", required=True, help="MLflow model version to approve")
    approve.add_argument("--actor", default=_user(), help="who approves (default: $USER)")
    handlers["approve"] = _approve

    rollback = commands.add_parser(
        "rollback", help="move the champion back to the previous (or a given) version",
        description="Move the 'champion' alias back, audit-log it and redeploy (runs the "
        "rollback_model Dagster job). Only a version the audit log shows was champion before "
        "(and that the gate did not reject since) is accepted.")
    rollback.add_argument("--experiment", required=True)
    rollback.add_argument("--to-version",
                          help="version to return to (default: the champion before the current)")
    rollback.add_argument("--actor", default=_user(), help="who rolls back (default: $USER)")
    handlers["rollback"] = _rollback

    audit = commands.add_parser(
        "audit", help="print or verify the audit log of model decisions",
        description="Every promote, reject, pending, approve, rollback and deploy decision, "
        "oldest first (a champion move is an intent, then its confirmation). --verify re-hashes "
        "the log's hash chain, compares its end with the head recorded on each registered "
        "model, and checks the champion alias against the log; exit status 1 names where it "
        "breaks.")
    audit.add_argument("--experiment")
    audit.add_argument("--limit", type=int, default=100)
    audit.add_argument("--verify", action="store_true", help="check the log; 1 when it breaks")
    audit.add_argument("--repair", action="store_true",
                       help="first close champion moves a crash interrupted, then --verify")
    handlers["audit"] = _audit

    grant = commands.add_parser(
        "catalog-grant", help="PostgreSQL: let the platform's role append to the audit log only",
        description="Run once by the catalog's owner (HEAT_PLATFORM_DB_URL set to the owner's "
        "URL): creates the catalog's tables if missing and grants ROLE what the platform needs, "
        "SELECT and INSERT only on audit_log (not its owner, ROLE cannot UPDATE, DELETE, "
        "TRUNCATE, DROP or ALTER it). The platform then runs with HEAT_PLATFORM_DB_URL set to "
        "ROLE's URL.")
    grant.add_argument("role", help="the PostgreSQL role the platform connects as")
    handlers["catalog-grant"] = _catalog_grant

    lineage = commands.add_parser(
        "lineage", help="the chain from a bento, model version or request back to raw files",
        description="Print the lineage of REF: bento -> model version, kind and aliases -> "
        "MLflow run (params, metrics, artifacts, git commit) -> gate decision and audit "
        "entries -> training set -> partitions -> raw files (sha256, source path, ingestion "
        "time) -> validation and quarantine. REF is a bento tag (heat_service:<version>), a "
        "model version (heat-model-<experiment>/<n> or <experiment>:<n>), a served "
        "model_version (<n>, with --experiment) or a request_id from the serving log.")
    lineage.add_argument("ref", help="bento tag, model version or request id")
    lineage.add_argument("--experiment", help="the experiment of a bare model_version")
    lineage.add_argument("--json", action="store_true", help="print the chain as JSON")
    lineage.add_argument("--verify", action="store_true",
                         help="re-hash the raw copies, training set files and model artifact; "
                         "exit status 1 names every mismatch")
    handlers["lineage"] = _lineage

    settings = commands.add_parser(
        "settings", help="print the effective settings (secrets masked)",
        description="Every setting the platform reads from its environment and the .env file, "
        "with its current value; --markdown prints the documentation table of the README.")
    settings.add_argument("--markdown", action="store_true",
                          help="the README's table: variable, default, meaning")
    handlers["settings"] = _settings

    serve = commands.add_parser(
        "serve", help="serve the champions' bento on a stable port, rolling out new ones blue/green",
        description="Run HAProxy on --host:--port in front of `bentoml serve` (install it with "
        "`apt-get install haproxy`). Whenever the deployed_bento asset publishes a new bento, "
        "it is started next to the live one and traffic switches once it is ready; the old "
        "server stops after its requests finish. A live server that dies is started again. "
        "Settings come from the environment and the .env file (HEAT_SERVING_*).",
    )
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; any other needs "
                       "HEAT_SERVING_API_KEY or --insecure)")
    serve.add_argument("--port", type=int, default=3100)
    serve.add_argument("--poll", type=float, default=2.0, help="seconds between checks for a new bento")
    serve.add_argument("--insecure", action="store_true",
                       help="serve a non-loopback address without an API key")
    handlers["serve"] = _serve

    mlflow_ui = commands.add_parser(
        "mlflow-ui", help="serve the MLflow UI on the platform's store (make dev runs it)",
        description="Run `mlflow server` on the platform's tracking store and artifacts, at "
        "HEAT_PLATFORM_MLFLOW_UI_URL (default http://127.0.0.1:5000): the address of every "
        "MLflow link in the Dagster UI. Stops on Ctrl-C or SIGTERM.")
    mlflow_ui.add_argument("--url", help="serve here instead (host and port of the URL)")
    handlers["mlflow-ui"] = _mlflow_ui
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    paths = PlatformPaths(_resolve_home(args.home)) if args.home else PlatformPaths.from_env()
    return handlers[args.command](args, paths)


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _resolve_home(home: str) -> Path:
    return Path(home).expanduser().resolve()


if __name__ == "__main__":
    sys.exit(main())
