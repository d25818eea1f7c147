"""``hexdbt serve``: one long-running process, one engine, one HTTP server, and the feeders that
are configured: dbt Cloud's webhooks and polling, target folders watched as ``hexdbt watch``
does, the on-run-end hook's outbox read as ``hexdbt relay`` does.

    serve(client, ledger, options, log)    # until the engine stops (a signal)

The HTTP server (``hexdbt.web``) hosts ``/metrics``, ``/healthz`` and, with a webhook secret,
``POST /webhooks/dbt-cloud``; ``ServeOptions.routes`` mounts more (the status page, behind
``ServeOptions.middleware``, its guard). It binds
127.0.0.1 unless told otherwise. ``hexdbt watch`` and ``hexdbt relay`` run on the same machinery
(``run_service``, the same HTTP stack for their ``--metrics-port``); ``serve --project-dir`` and
``--relay-project-dir`` host their feeders beside dbt Cloud's, on its one engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from hexdbt.errors import ConfigError
from hexdbt.feeders.daemon import Feeder, InvocationEvents, daemon_engine, run_service
from hexdbt.feeders.dbt_cloud import WEBHOOK_PATH

if TYPE_CHECKING:
    from starlette.middleware import Middleware
    from starlette.routing import BaseRoute

    from hexdbt.engine import Engine, EngineSettings
    from hexdbt.feeders.artifact_watch import WatchOptions
    from hexdbt.feeders.dbt_cloud import DbtCloudOptions
    from hexdbt.feeders.relay import DbtTarget, RelayOptions
    from hexdbt.hex.client import HexClient
    from hexdbt.ledger import Ledger
    from hexdbt.logs import EventLog
    from hexdbt.metrics import DaemonMetrics
    from hexdbt.settings import DbtCloudSettings


@dataclass(frozen=True, slots=True)
class DbtCloudFeeding:
    """dbt Cloud as a feeder of ``serve``: where it is, and what to take."""

    settings: DbtCloudSettings
    options: DbtCloudOptions


@dataclass(frozen=True, slots=True)
class ServeOptions:
    host: str
    port: int  # 0: any free one
    dbt_cloud: DbtCloudFeeding | None = None
    watch: WatchOptions | None = None  # target folders to watch, as `hexdbt watch`
    relay: tuple[DbtTarget, RelayOptions] | None = None  # an outbox to read, as `hexdbt relay`
    routes: Sequence[BaseRoute] = field(default_factory=tuple)
    middleware: Sequence[Middleware] = field(default_factory=tuple)  # the status page's guard


def check_dbt_cloud(
    settings: DbtCloudSettings | None, *, polling: bool, required: bool
) -> DbtCloudSettings | None:
    """The dbt Cloud settings ``serve`` can use (None: no dbt Cloud, and it is not
    ``required``), or a ConfigError saying what is missing."""
    if settings is None:
        if not required:
            return None
        raise ConfigError(
            "hexdbt serve has nothing to serve: set DBT_CLOUD_ACCOUNT_ID for dbt Cloud, or"
            " pass --project-dir to watch a dbt project's target folder, or"
            " --relay-project-dir to read a dbt project's outbox",
            hint="for dbt Cloud, also DBT_CLOUD_API_TOKEN, then HEXDBT_DBT_CLOUD_WEBHOOK_SECRET"
            " and/or --dbt-cloud-poll (docs/dbt-cloud.md)",
        )
    if not settings.token:
        raise ConfigError(
            "no dbt Cloud token: set DBT_CLOUD_API_TOKEN (runs' artifacts are read with it)",
            hint="create a service token with the read-only permission set (docs/dbt-cloud.md)",
        )
    if not settings.webhook_secret and not polling:
        raise ConfigError(
            "hexdbt serve would hear of no dbt Cloud run: set HEXDBT_DBT_CLOUD_WEBHOOK_SECRET"
            " for webhooks, or pass --dbt-cloud-poll",
            hint="docs/dbt-cloud.md says how to create the webhook subscription",
        )
    return settings


def serve(
    client: HexClient,
    ledger: Ledger,
    options: ServeOptions,
    log: EventLog,
    *,
    settings: EngineSettings,
) -> None:
    """Serve until the engine stops (the client's stop event, as a signal handler sets it)."""
    from hexdbt.metrics import DaemonMetrics
    from hexdbt.web import HttpServer, build_app

    metrics = DaemonMetrics("serve")
    engine = daemon_engine(client, ledger, log, replace(settings, daemon=True), metrics=metrics)
    events = InvocationEvents(log, metrics)
    feeders: list[Feeder] = []
    routes = list(options.routes)
    said: dict[str, Any] = {}
    with ExitStack() as held:
        if options.watch is not None:
            from hexdbt.feeders.watch import WatchFeeder

            feeders.append(WatchFeeder(engine, ledger, options.watch, log, events))
            said["watching"] = [str(target.target_dir) for target in options.watch.targets]
        if options.relay is not None:
            from hexdbt.feeders.relay import RelayDaemon, WarehouseOutbox

            where, relay_options = options.relay
            outbox = WarehouseOutbox(where)
            relay = RelayDaemon(
                client, ledger, outbox, relay_options, log, metrics=metrics, engine=engine
            )
            feeders.append(relay.feeder())
            said["outbox"] = outbox.relation
        if options.dbt_cloud is not None:
            feeder, cloud_routes = _dbt_cloud_feeder(
                engine, ledger, client, options.dbt_cloud, log, metrics, held
            )
            feeders.append(feeder)
            routes = [*cloud_routes, *routes]
            said.update(_dbt_cloud_said(options.dbt_cloud))
        server = held.enter_context(
            HttpServer(
                build_app(metrics, routes=routes, middleware=options.middleware),
                options.host,
                options.port,
                what="HTTP",
            )
        )
        webhook = "off"
        if options.dbt_cloud is not None and options.dbt_cloud.settings.webhook_secret:
            webhook = f"{server.url}{WEBHOOK_PATH}"
        log.emit(
            "serving",
            url=server.url,
            webhook=webhook,
            metrics=f"{server.url}/metrics",
            health=f"{server.url}/healthz",
            **said,
        )
        run_service(engine, feeders, log, metrics=metrics, events=events)


def _dbt_cloud_feeder(
    engine: Engine,
    ledger: Ledger,
    client: HexClient,
    feeding: DbtCloudFeeding,
    log: EventLog,
    metrics: DaemonMetrics,
    held: ExitStack,
) -> tuple[Feeder, list[BaseRoute]]:
    """The dbt Cloud feeder, and its webhook route when a secret is set; closed by ``held``."""
    from hexdbt.dbt.cloud import DbtCloudClient
    from hexdbt.feeders.dbt_cloud import DbtCloudFeeder

    cloud = DbtCloudClient(feeding.settings, clock=client.clock)
    held.callback(cloud.close)
    feeder = DbtCloudFeeder(
        engine, ledger, cloud, feeding.options, log, clock=client.clock, metrics=metrics
    )
    secret = feeding.settings.webhook_secret
    if not secret:
        return feeder, []
    from hexdbt.feeders.dbt_cloud_webhook import WebhookEndpoint

    endpoint = WebhookEndpoint(feeder, secret, log, metrics)
    held.callback(endpoint.close)
    return feeder, list(endpoint.routes)


def _dbt_cloud_said(feeding: DbtCloudFeeding) -> dict[str, Any]:
    options = feeding.options
    return {
        "polling": "off"
        if options.poll_interval_s is None
        else f"every {options.poll_interval_s:g} s",
        "jobs": "of deployment environments"
        if options.job_ids is None
        else sorted(options.job_ids),
    }
