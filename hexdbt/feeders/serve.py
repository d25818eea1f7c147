"""``hexdbt serve``: one long-running process, one engine, one HTTP server, and the feeders that
are configured (dbt Cloud's webhooks and polling).

    serve(client, ledger, options, log)    # until the engine stops (a signal)

The HTTP server (``hexdbt.web``) hosts ``/metrics``, ``/healthz`` and, with a webhook secret,
``POST /webhooks/dbt-cloud``; ``ServeOptions.routes`` mounts more (a status page). It binds
127.0.0.1 unless told otherwise. ``hexdbt watch`` and ``hexdbt relay`` run on the same machinery
(``run_service``, the same HTTP stack for their ``--metrics-port``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from hexdbt.errors import ConfigError
from hexdbt.feeders.daemon import daemon_engine, run_service

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from hexdbt.engine import EngineSettings
    from hexdbt.feeders.dbt_cloud import DbtCloudOptions
    from hexdbt.hex.client import HexClient
    from hexdbt.ledger import Ledger
    from hexdbt.logs import EventLog
    from hexdbt.settings import DbtCloudSettings


@dataclass(frozen=True, slots=True)
class ServeOptions:
    dbt_cloud: DbtCloudSettings
    feeder: DbtCloudOptions
    host: str
    port: int  # 0: any free one
    routes: Sequence[BaseRoute] = field(default_factory=tuple)


def check_serve_options(settings: DbtCloudSettings | None, polling: bool) -> DbtCloudSettings:
    """The dbt Cloud settings ``serve`` needs, or a ConfigError saying what is missing."""
    if settings is None:
        raise ConfigError(
            "hexdbt serve has no dbt Cloud account to serve: set DBT_CLOUD_ACCOUNT_ID",
            hint="and DBT_CLOUD_API_TOKEN, then HEXDBT_DBT_CLOUD_WEBHOOK_SECRET and/or"
            " --dbt-cloud-poll (docs/dbt-cloud.md)",
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
    from hexdbt.dbt.cloud import DbtCloudClient
    from hexdbt.feeders.dbt_cloud import DbtCloudFeeder
    from hexdbt.metrics import DaemonMetrics
    from hexdbt.web import HttpServer, build_app

    metrics = DaemonMetrics("serve")
    engine = daemon_engine(client, ledger, log, replace(settings, daemon=True), metrics=metrics)
    cloud = DbtCloudClient(options.dbt_cloud, clock=client.clock)
    feeder = DbtCloudFeeder(
        engine, ledger, cloud, options.feeder, log, clock=client.clock, metrics=metrics
    )
    routes = list(options.routes)
    secret = options.dbt_cloud.webhook_secret
    endpoint = None
    if secret:
        from hexdbt.feeders.dbt_cloud_webhook import PATH, WebhookEndpoint

        endpoint = WebhookEndpoint(feeder, secret, log, metrics)
        routes = [*endpoint.routes, *routes]
    app = build_app(metrics, routes=routes)
    try:
        with HttpServer(app, options.host, options.port, what="HTTP") as server:
            log.emit(
                "serving",
                url=server.url,
                webhook=f"{server.url}{PATH}" if secret else "off",
                metrics=f"{server.url}/metrics",
                health=f"{server.url}/healthz",
                polling=f"every {options.feeder.poll_interval_s:g} s"
                if options.feeder.poll_interval_s is not None
                else "off",
                jobs=sorted(options.feeder.job_ids)
                if options.feeder.job_ids is not None
                else "of deployment environments",
            )
            run_service(engine, [feeder], log, metrics=metrics, events=feeder.events)
    finally:
        if endpoint is not None:
            endpoint.close()
        cloud.close()
