"""``hexdbt relay``: trigger Hex from the outbox table that hexdbt's dbt on-run-end hook writes.

Where hexdbt cannot run beside dbt (dbt Cloud, managed schedulers), the hook writes each
invocation to a table in the warehouse (``hexdbt.dbt.outbox`` reads its entries). The relay reads
new complete entries through the user's own dbt profile and adapter (no second set of
credentials, no manifest, no project parse), plans each with the same planner as ``hexdbt plan``,
and hands the plan to the engine, whose ledger makes it once per invocation however many relays
read the same outbox. Handled entries older than the retention are deleted.

As a daemon, the main thread runs the engine's loop and a thread of its own polls the outbox
(as ``hexdbt watch`` does with its folders); ``--once`` polls once, sends (with ``--wait``,
follows the runs to their end) and reports what it handed over (``RelayDaemon.relayed``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hexdbt.clock import to_iso
from hexdbt.dbt.outbox import EntrySummary, OutboxChunk, OutboxEntry, RejectedEntry, assemble
from hexdbt.errors import ArtifactError, ConfigError, HexdbtError, StateUnavailable
from hexdbt.feeders.daemon import FeederCalls, InvocationEvents, daemon_engine, run_service
from hexdbt.logs import EventLog, error_fields
from hexdbt.outcomes import Outcome
from hexdbt.planner.files import load_mapping_set
from hexdbt.planner.rules import Plan, make_plan

if TYPE_CHECKING:
    from hexdbt.engine import Engine, EngineSettings
    from hexdbt.hex.client import HexClient
    from hexdbt.hex.polls import Progress
    from hexdbt.ledger import Ledger, TriggerRecord
    from hexdbt.metrics import DaemonMetrics

DEFAULT_TABLE = "hexdbt_outbox"
# The hook's default schema is the target's with this suffix: a schema of its own per target.
DEFAULT_SCHEMA_SUFFIX = "_hexdbt"
# Payloads are fetched this many entries at a time: a big project's entry is megabytes.
FETCH_BATCH = 20

# How adapters say the table is not there yet (DuckDB, PostgreSQL, Snowflake, BigQuery,
# Databricks; DuckDB before its file exists), and that DuckDB's file is held by another process (dbt, still building).
_MISSING = re.compile(
    r"does not exist|not found|TABLE_OR_VIEW_NOT_FOUND|no such file", re.IGNORECASE
)
_LOCKED = re.compile(r"could not set lock|conflicting lock|database is locked", re.IGNORECASE)
_INVOCATION_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


class OutboxNotReady(Exception):
    """The outbox cannot be read now, but may be later: not created yet, or DuckDB's file is
    locked by a running dbt. ``reason`` is the log line's."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DbtTarget:
    """Where the outbox is, as dbt resolves it: the project, its profiles and target, and the
    vars that name the outbox (``hexdbt_outbox_schema``, ``hexdbt_outbox_table``)."""

    project_dir: Path
    profiles_dir: Path | None = None
    target: str | None = None
    vars: Mapping[str, Any] = field(default_factory=dict)


class WarehouseOutbox:
    """The outbox table read through the user's dbt profile and adapter.

    Each read opens a connection and closes it after: DuckDB allows one writing process per
    file, and dbt must find it free when the next build starts.
    """

    def __init__(self, where: DbtTarget) -> None:
        import os
        from argparse import Namespace

        from dbt.adapters.factory import get_adapter, register_adapter, reset_adapters
        from dbt.config.runtime import RuntimeConfig
        from dbt.flags import set_from_args
        from dbt.mp_context import get_mp_context
        from dbt_common.context import set_invocation_context
        from dbt_common.events.event_manager_client import cleanup_event_logger

        # dbt's events would go to stdout, where hexdbt prints nothing but results.
        cleanup_event_logger()
        set_invocation_context(dict(os.environ))
        project_dir = where.project_dir.absolute()
        args = Namespace(
            project_dir=str(project_dir),
            profiles_dir=str(where.profiles_dir.absolute()) if where.profiles_dir else None,
            target=where.target,
            profile=None,
            threads=None,
            vars=dict(where.vars),
        )
        if args.profiles_dir is None:
            from dbt.cli.resolvers import default_profiles_dir

            # dbt's order: --profiles-dir, DBT_PROFILES_DIR, the current folder, ~/.dbt.
            args.profiles_dir = os.environ.get("DBT_PROFILES_DIR") or str(default_profiles_dir())
        args.target = args.target or os.environ.get("DBT_TARGET")
        set_from_args(args, {})
        try:
            config = RuntimeConfig.from_args(args)
        except Exception as exc:  # dbt's errors have no common base worth naming
            raise ConfigError(
                f"{project_dir}: dbt cannot load the project and profile:"
                f" {_in_one_line(str(exc)) or repr(exc)}",
                hint="check --project-dir, --profiles-dir and --target as you would for dbt",
            ) from None
        # The DuckDB file, when the profile names one on this disk: connecting would create it.
        self._duckdb_file: Path | None = None
        if config.credentials.type == "duckdb":
            # dbt-duckdb keeps its file open for the process's life by default: the relay must
            # let go of it after each read, or the next dbt build finds it locked.
            config.credentials.keep_open = False  # type: ignore[attr-defined]
            self._duckdb_file = _local_duckdb_file(config.credentials.path)  # type: ignore[attr-defined]
        reset_adapters()  # type: ignore[no-untyped-call]  # a process reads one project's outbox: start from its adapter alone
        register_adapter(config, get_mp_context())
        self._adapter = get_adapter(config)
        variables = {**config.vars.to_dict(), **dict(where.vars)}  # type: ignore[no-untyped-call]
        credentials = config.credentials
        self.adapter_type: str = credentials.type
        self.target_name: str = config.target_name
        self.relation = str(
            self._adapter.Relation.create(
                database=credentials.database,
                schema=variables.get("hexdbt_outbox_schema")
                or credentials.schema + DEFAULT_SCHEMA_SUFFIX,
                identifier=variables.get("hexdbt_outbox_table") or DEFAULT_TABLE,
            )
        )

    def summaries(self) -> list[EntrySummary]:
        rows = self._query(
            "select invocation_id, count(*), max(chunk_count), min(written_at)"
            f" from {self.relation} group by invocation_id"
        )
        return [
            EntrySummary(str(row[0]), int(row[1]), _whole(row[2]), str(row[3] or ""))
            for row in rows
            if _INVOCATION_ID.match(str(row[0]))
        ]

    def chunks(self, invocation_ids: Sequence[str]) -> list[OutboxChunk]:
        if not invocation_ids:
            return []
        rows = self._query(
            "select invocation_id, chunk_index, chunk_count, written_at, payload"
            f" from {self.relation} where invocation_id in ({_id_list(invocation_ids)})"
        )
        return [
            OutboxChunk(
                str(row[0]),
                _whole(row[1], missing=-1),
                _whole(row[2]),
                str(row[3] or ""),
                None if row[4] is None else str(row[4]),
            )
            for row in rows
        ]

    def delete(self, invocation_ids: Sequence[str]) -> None:
        if invocation_ids:
            self._query(
                f"delete from {self.relation} where invocation_id in ({_id_list(invocation_ids)})",
                fetch=False,
            )

    def _query(self, sql: str, *, fetch: bool = True) -> list[Sequence[Any]]:
        if self._duckdb_file is not None and not self._duckdb_file.exists():
            raise OutboxNotReady(
                "outbox_missing",
                f"the DuckDB file {self._duckdb_file} does not exist (yet): dbt reads a relative"
                " path in profiles.yml from the folder it runs in, so run the relay from that"
                " folder too, or make the path absolute",
            )
        adapter = self._adapter
        try:
            with adapter.connection_named("hexdbt-relay"):
                _, table = adapter.execute(sql, auto_begin=not fetch, fetch=fetch)
                if not fetch:
                    adapter.commit_if_has_connection()
                return [tuple(row) for row in table.rows] if fetch else []
        except Exception as exc:  # the adapter's own errors: each adapter has its own types
            text = str(exc)
            if _LOCKED.search(text):
                raise OutboxNotReady("warehouse_busy", text) from None
            if _MISSING.search(text):
                raise OutboxNotReady("outbox_missing", text) from None
            raise ArtifactError(
                f"{self.relation}: cannot read the outbox: {_in_one_line(text)}",
                hint="the relay reads it with your dbt profile's credentials: check that they"
                " can select from (and delete in) the outbox table",
            ) from None
        finally:
            adapter.cleanup_connections()


def _local_duckdb_file(path: str) -> Path | None:
    """The file a dbt-duckdb ``path`` names on this disk (relative: from the current folder, as
    DuckDB reads it), or None for an in-memory database, MotherDuck or a URL."""
    if path == ":memory:" or path.startswith("md:") or "://" in path:
        return None
    return Path(path).absolute()


def _whole(value: Any, *, missing: int = 0) -> int:
    """A chunk number as the outbox holds it; a NULL written by hand reads as ``missing``, which
    the entry's checks then name as damage."""
    return missing if value is None else int(value)


def _id_list(invocation_ids: Sequence[str]) -> str:
    for invocation_id in invocation_ids:
        if not _INVOCATION_ID.match(invocation_id):
            raise ValueError(f"not an invocation id: {invocation_id!r}")
    return ", ".join(f"'{invocation_id}'" for invocation_id in invocation_ids)


def _in_one_line(text: str) -> str:
    """What an error of dbt or an adapter says is wrong, on one line: dbt puts a heading first
    ("Runtime Error", "Database Error") with the words that matter below it, and ends some
    messages with a list ("The valid target names for this profile are:" then " - dev")."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and re.fullmatch(r"[A-Za-z ]*Error", lines[0]):
        lines = lines[1:]
    if not lines:
        return text
    items = [line.removeprefix("-").strip() for line in lines[1:] if line.startswith("-")]
    return f"{lines[0]} {', '.join(items)}" if lines[0].endswith(":") and items else lines[0]


def plan_entry(entry: OutboxEntry, mappings_file: Path | None) -> Plan:
    """The plan of one outbox entry: the mapping file (re-read each time, so edits apply), else
    the entry's Hex exposures, and the same rules as ``hexdbt plan``."""
    mappings, _, _ = load_mapping_set(mappings_file, entry.manifest)
    return make_plan(entry.invocation, mappings, entry.manifest)


@dataclass(frozen=True, slots=True)
class Relayed:
    """An outbox entry ``relay --once`` handed over, and what became of it: one outcome per
    mapped Hex project, or ``note``, why there is none (handled by another process already, or
    the entry could not be planned: then ``exit_code`` is the error's)."""

    invocation_id: str
    command: str
    target: str
    outcomes: tuple[Outcome, ...] = ()
    note: str | None = None
    exit_code: int = 0


@dataclass
class _HandedOver:
    fields: Mapping[str, Any]
    plan: Plan | None
    recorded: Future[list[TriggerRecord] | None] | None
    error: HexdbtError | None = None


@dataclass(frozen=True, slots=True)
class RelayOptions:
    mappings_file: Path | None = None
    poll_interval_s: float = 30.0
    retain_days: float = 30.0


class RelayDaemon:
    """``hexdbt relay``: the outbox feeding the engine, once (``run_once``) or until ``stop``
    is called (or the client's stop event is set, as a signal handler does).

    ``run`` must be called on the thread that should send and poll Hex (the CLI's main thread);
    the outbox is polled on a thread of its own. As with ``hexdbt watch``, live Hex runs are left
    running when it stops and followed again by the next relay, which takes them up from the
    ledger. ``metrics``: counted as it goes (``hexdbt.metrics``), healthy while its engine runs.

    ``once``: poll once, send what fits and return; with ``settings.wait``, once every run it
    started (or took up) has ended, shown by ``progress`` meanwhile. ``relayed`` and ``earlier``
    then say what became of it.
    """

    def __init__(
        self,
        client: HexClient,
        ledger: Ledger,
        outbox: WarehouseOutbox,
        options: RelayOptions,
        log: EventLog,
        *,
        settings: EngineSettings | None = None,
        metrics: DaemonMetrics | None = None,
        once: bool = False,
        progress: Progress | None = None,
        engine: Engine | None = None,
    ) -> None:
        from hexdbt.engine import EngineSettings

        self.client = client
        self.ledger = ledger
        self.outbox = outbox
        self.options = options
        self.log = log
        self.once = once
        self.metrics = metrics
        self.events = InvocationEvents(log, metrics)
        settings = settings or EngineSettings(cancel_on_interrupt=False)
        # Once without waiting: send what fits and leave; the next relay (or `hexdbt status`)
        # follows the runs.
        # ``engine``: another daemon's (``hexdbt serve``), which this relay feeds (``feeder``).
        self.engine: Engine = engine or daemon_engine(
            client,
            ledger,
            log,
            settings if once else replace(settings, daemon=True),
            progress=progress,
            metrics=metrics,
        )
        self.source = f"relay:{outbox.relation}"
        self._handled: set[str] = set()
        self._set_aside_ids: set[str] = set()  # entries that cannot be read
        self._not_ready: str | None = None
        self._handed_over: list[_HandedOver] = []
        self._resumed: Future[list[TriggerRecord]] | None = None

    def stop(self) -> None:
        self.engine.request_stop()

    def run(self) -> None:
        if self.once:
            self.poll()
            self._resumed = self.engine.resume()
            self.engine.close()
            self.engine.run()
            return
        run_service(
            self.engine, [self.feeder()], self.log, metrics=self.metrics, events=self.events
        )

    def feeder(self) -> FeederCalls:
        """The outbox, read on a thread of its own that ends once the engine is stopping: a
        feeder of ``run_service`` (this relay's own engine, or ``hexdbt serve``'s)."""
        thread = threading.Thread(target=self._poll_loop, name="hexdbt-relay", daemon=True)
        return FeederCalls(thread.start, lambda: thread.join(timeout=10))

    def _poll_loop(self) -> None:
        stopping = self.engine.stopping
        while not stopping.is_set():
            try:
                self.poll()
            except HexdbtError as exc:
                self.log.emit("outbox_failed", "error", **error_fields(exc))
            self.client.clock.wait(stopping, self.options.poll_interval_s)

    def poll(self) -> int:
        """Hand every new complete entry to the engine, then delete the old handled ones.
        Returns how many entries were handed over. A busy or missing outbox, or a state that
        cannot be reached (PostgreSQL lost: the entries wait in the outbox), is logged once."""
        try:
            handed_over = self._hand_over()
        except OutboxNotReady as exc:
            self._not_ready_now(exc.reason, _in_one_line(str(exc)))
            return 0
        except StateUnavailable as exc:
            self._not_ready_now("state_unavailable", str(exc))
            return 0
        self._not_ready = None
        return handed_over

    def _not_ready_now(self, reason: str, detail: str) -> None:
        if self._not_ready != reason:
            self._not_ready = reason
            self.log.emit(
                reason, relation=self.outbox.relation, detail=detail, retry="at the next poll"
            )

    def _hand_over(self) -> int:
        summaries = sorted(self.outbox.summaries(), key=lambda summary: summary.written_at)
        self._set_aside_ids |= set(self.ledger.rejected_inputs(self.source))  # by any relay
        self._handled |= self._set_aside_ids
        for summary in summaries:
            if summary.invocation_id not in self._handled and summary.damage is not None:
                self._set_aside(
                    RejectedEntry(summary.invocation_id, summary.written_at, summary.damage)
                )
        new = [
            summary.invocation_id
            for summary in summaries
            if summary.complete and summary.invocation_id not in self._handled
        ]
        for invocation_id in new:
            if self.ledger.has_invocation(invocation_id):
                self._handled.add(invocation_id)
        new = [invocation_id for invocation_id in new if invocation_id not in self._handled]
        handed_over = 0
        for start in range(0, len(new), FETCH_BATCH):
            batch = new[start : start + FETCH_BATCH]
            entries, rejected = assemble(self.outbox.chunks(batch), self.outbox.relation)
            for bad in rejected:
                self._set_aside(bad)
            for entry in entries:
                self._submit(entry)
            handed_over += len(entries)
        self._delete_old(summaries)
        return handed_over

    def _set_aside(self, entry: RejectedEntry) -> None:
        """An entry that cannot be read is recorded as rejected and said once (by whichever
        relay meets it first); every other entry goes on."""
        self._handled.add(entry.invocation_id)
        self._set_aside_ids.add(entry.invocation_id)
        if not self.ledger.reject_input(self.source, entry.invocation_id, entry.reason):
            return
        if self.metrics is not None:
            self.metrics.invocation_seen("rejected")
        self.log.emit(
            "outbox_entry_rejected",
            "error",
            invocation_id=entry.invocation_id,
            written_at=entry.written_at,
            reason=entry.reason,
            kept=f"in the outbox for --retain-days {self.options.retain_days:g}",
        )
        if self.once:
            fields = {"invocation_id": entry.invocation_id, "command": "", "target": ""}
            error = ArtifactError(f"set aside, it cannot be read: {entry.reason}")
            self._handed_over.append(_HandedOver(fields, None, None, error))

    def _submit(self, entry: OutboxEntry) -> None:
        invocation = entry.invocation
        self._handled.add(invocation.invocation_id)
        fields = {
            "invocation_id": invocation.invocation_id,
            "command": invocation.command,
            "target": entry.target,
            "written_at": entry.written_at,
        }
        try:
            plan = plan_entry(entry, self.options.mappings_file)
        except HexdbtError as exc:
            self.events.failed(fields, exc)
            if self.once:
                self._handed_over.append(_HandedOver(fields, None, None, exc))
            return
        submitted = self.engine.submit(plan, source=self.source, only_new=True)
        submitted.add_done_callback(
            lambda future: self.events.submitted(
                plan, future, fields, results=len(invocation.results)
            )
        )
        if self.once:
            self._handed_over.append(_HandedOver(fields, plan, submitted))

    def relayed(self) -> list[Relayed]:
        """After ``run`` with ``once``: each entry handed over, in the outbox's order."""
        reports = []
        for item in self._handed_over:
            fields = item.fields
            invocation = (fields["invocation_id"], fields["command"], fields["target"])
            if item.plan is None or item.recorded is None:
                assert item.error is not None
                unplanned = (
                    str(item.error) if not fields["command"] else f"cannot be planned: {item.error}"
                )
                reports.append(Relayed(*invocation, note=unplanned, exit_code=item.error.exit_code))
            elif not item.recorded.done():  # stopped (a signal) before the engine took it in
                reports.append(Relayed(*invocation, note="not recorded: stopped first"))
            elif (failure := item.recorded.exception()) is not None:
                reports.append(
                    Relayed(
                        *invocation,
                        note=f"cannot be recorded: {failure}",
                        exit_code=failure.exit_code if isinstance(failure, HexdbtError) else 1,
                    )
                )
            elif item.recorded.result() is None:
                reports.append(
                    Relayed(*invocation, note="handled before: another hexdbt process has it")
                )
            else:
                reports.append(Relayed(*invocation, tuple(self.engine.outcomes_of(item.plan))))
        return reports

    def earlier(self) -> list[Outcome]:
        """After ``run`` with ``once``: what it took up of earlier invocations (queued
        triggers, live runs), as ``hexdbt run`` reports them."""
        if self._resumed is None or not self._resumed.done() or self._resumed.exception():
            return []
        mine = {
            trigger.trigger_key
            for item in self._handed_over
            if item.plan is not None
            for trigger in item.plan.triggers
        }
        return [
            self.engine.outcome(self.ledger.get(record.trigger_key))
            for record in self._resumed.result()
            if record.trigger_key not in mine
        ]

    def _delete_old(self, summaries: Sequence[EntrySummary]) -> None:
        """Entries older than --retain-days: handled ones, incomplete ones, and those set aside."""
        cutoff = to_iso(self.client.clock.now() - self.options.retain_days * 86400, digits=6)
        old = [
            summary.invocation_id
            for summary in summaries
            if summary.written_at < cutoff
            and (
                not summary.complete
                or summary.invocation_id in self._set_aside_ids
                or self.ledger.has_invocation(summary.invocation_id)
            )
        ]
        if old:
            self.outbox.delete(old)
            self.log.emit("entries_deleted", entries=len(old), older_than=cutoff)
