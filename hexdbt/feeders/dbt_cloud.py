"""dbt Cloud as a way in: from an ended dbt Cloud job run to one plan, with the same planner as
``hexdbt plan``, once per run however it was heard of.

A run is heard of by a signed webhook (``hexdbt.feeders.dbt_cloud_webhook``, which records it in
the ledger before it answers) or by polling the Admin API (``--dbt-cloud-poll``); either way it
lands in the ledger's ``dbt_cloud_runs`` as a run to plan, and a worker thread takes it from
there, on this process or on any other ``serve`` sharing the state:

1. a job not allowed (not in ``--dbt-cloud-jobs``; without it, a CI or merge job, or one of a
   development environment), a cancelled run, or one that failed before any dbt step: nothing
   is planned, and the run is settled with the reason, said once;
2. every step's ``run_results.json`` is fetched (a step that is not a dbt command that writes
   one, such as the clone, the profile and ``dbt deps``, answers 404: expected), and the last
   dbt step's ``manifest.json``; a dbt step whose file is not there yet is tried again later,
   with a growing interval, until ``give_up_after_s`` after the first failed try: then the run
   is settled as given up, said once as an error naming the run and the step;
3. the steps' results are merged in order (a later step's result for a node wins), so that a
   job of ``dbt run`` then ``dbt test`` satisfies ``require_tests``, and planned as one
   invocation ``dbt-cloud:<run id>``; templates see the last dbt step as ``invocation``, plus
   ``invocation.dbt_cloud`` (``run_id``, ``job_id``, ``environment_id``);
4. each step's dbt invocation id is recorded as handled by the run (a project that keeps the
   on-run-end hook and ``hexdbt relay`` starts nothing twice), then the plan goes to the engine
   with ``only_new``: the ledger's guarded insert of the invocation lets exactly one process
   record its triggers, across webhook retries, polling, restarts and several processes.
"""

from __future__ import annotations

import queue
import re
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hexdbt.clock import from_iso
from hexdbt.crashpoints import crash_point
from hexdbt.dbt.artifacts import (
    REFRESHING_COMMANDS,
    Invocation,
    Manifest,
    load_manifest,
    load_run_results,
)
from hexdbt.dbt.cloud import CANCELLED, ERROR, RUNS_PAGE, CloudRun, CloudStep, DbtCloudClient
from hexdbt.errors import ArtifactError, ConfigError, DbtCloudError, HexdbtError, StateError
from hexdbt.feeders.daemon import InvocationEvents
from hexdbt.ledger import DbtCloudRunRecord
from hexdbt.logs import EventLog, error_fields
from hexdbt.planner.files import load_mapping_set
from hexdbt.planner.rules import Plan, invocation_context, make_plan

if TYPE_CHECKING:
    from concurrent.futures import Future

    from hexdbt.clock import Clock
    from hexdbt.engine import Engine
    from hexdbt.ledger import Ledger, TriggerRecord
    from hexdbt.metrics import DaemonMetrics

SOURCE_PREFIX = "dbt-cloud"
# Where ``serve`` takes dbt Cloud's webhooks (``dbt_cloud_webhook``).
WEBHOOK_PATH = "/webhooks/dbt-cloud"
DEFAULT_POLL_INTERVAL_S = 60.0
DEFAULT_LOOK_BACK_S = 86_400.0
# A run whose artifacts cannot be had yet (a 5xx, a dbt step's file not there yet) is tried
# again after this, doubling up to the cap.
RETRY_FIRST_S = 5.0
RETRY_CAP_S = 300.0
# ... until this long after its first failed try (in this process): then it is given up. dbt
# Cloud sends ``job.run.completed`` once the artifacts are there, so an hour of "not there" is
# a run whose artifacts will not come (or an outage as long: the error event says which).
DEFAULT_GIVE_UP_S = 3600.0
# A dbt Cloud step runs dbt when its name says so ("Invoke dbt with `dbt build`"); these commands
# write no run_results.json, so a 404 for them is no news.
_DBT_STEP = re.compile(r"dbt with `dbt\s+([a-z-]+)")
_NO_RESULTS_COMMANDS = frozenset({"deps", "clean", "debug", "init", "parse"})


def trigger_invocation_id(run_id: str) -> str:
    """The invocation a dbt Cloud run is planned as: its triggers' keys derive from it."""
    return f"{SOURCE_PREFIX}:{run_id}"


@dataclass(frozen=True, slots=True)
class MappingsByRun:
    """Which mapping file plans a run: its job's (``jobs``), else its dbt Cloud project's
    (``projects``), else ``default`` (``--dbt-cloud-config``, ``load_job_mappings``)."""

    default: Path | None = None
    jobs: Mapping[str, Path] = field(default_factory=dict)
    projects: Mapping[str, Path] = field(default_factory=dict)

    def for_run(self, run: CloudRun) -> Path | None:
        return self.jobs.get(run.job_id) or self.projects.get(run.project_id) or self.default

    def files(self) -> list[Path]:
        return [*self.jobs.values(), *self.projects.values()]


def load_job_mappings(path: Path, default: Path | None) -> MappingsByRun:
    """``--dbt-cloud-config``: a YAML file mapping dbt Cloud job ids (``jobs:``) and project ids
    (``projects:``) to mapping files, relative to it::

        jobs: {1234: finance/hex_mappings.yml}
        projects: {55: marketing/hex_mappings.yml}
    """
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(document, Mapping) or set(document) - {"jobs", "projects"}:
        raise ConfigError(
            f"{path}: expected a mapping with jobs: and/or projects:",
            hint="e.g. jobs: {1234: finance/hex_mappings.yml}",
        )
    parsed: dict[str, dict[str, Path]] = {}
    for key in ("jobs", "projects"):
        entries = document.get(key) or {}
        if not isinstance(entries, Mapping):
            raise ConfigError(f"{path}: {key}: expected ids mapped to mapping files")
        for item_id, file in entries.items():
            if not str(item_id).isdigit() or not isinstance(file, str) or not file:
                raise ConfigError(
                    f"{path}: {key}: {item_id!r}: expected a dbt Cloud id and a mapping file"
                )
        parsed[key] = {
            str(item_id): (path.parent / file).absolute() for item_id, file in entries.items()
        }
    return MappingsByRun(default, parsed["jobs"], parsed["projects"])


@dataclass(frozen=True, slots=True)
class DbtCloudOptions:
    account_id: str
    mappings: MappingsByRun = field(default_factory=MappingsByRun)
    job_ids: frozenset[str] | None = None  # None: jobs of deployment environments
    poll_interval_s: float | None = None  # None: no polling
    look_back_s: float = DEFAULT_LOOK_BACK_S
    take_old_runs: bool = False  # the first poll also takes runs from before it
    give_up_after_s: float = DEFAULT_GIVE_UP_S  # a run that cannot be planned for this long


@dataclass(frozen=True, slots=True)
class CloudPlan:
    """A run planned: the plan, and the steps' dbt invocations (id, command, step index)."""

    plan: Plan
    steps: tuple[tuple[str, str, int], ...]
    downloaded_bytes: int


@dataclass(frozen=True, slots=True)
class NothingToPlan:
    """A run that plans nothing, and why (said to the user once)."""

    reason: str


class NotYet(ArtifactError):
    """The run's artifacts cannot all be had now; try again later. ``step``: the step whose
    file is missing, when one is. (An expected failure, so logged without a traceback.)"""

    def __init__(self, message: str, step: CloudStep | None = None) -> None:
        super().__init__(message)
        self.step = step


def _step_command(name: str) -> str | None:
    matched = _DBT_STEP.search(name)
    return matched.group(1) if matched else None


def plan_cloud_run(
    client: DbtCloudClient,
    run_id: str,
    mappings: MappingsByRun,
    *,
    environ: Mapping[str, str] | None = None,
) -> CloudPlan | NothingToPlan:
    """Fetch a run's steps and artifacts and plan it (see the module's docstring). Raises
    ``NotYet`` or ``DbtCloudError`` when it should be tried again, ``ArtifactError`` (or
    ``ConfigError``) when it cannot be planned at all."""
    run = client.run(run_id)
    if run.status == CANCELLED:
        return NothingToPlan("cancelled in dbt Cloud: nothing to plan")
    if not run.ended:
        raise NotYet(f"run {run_id} has not ended yet ({run.status_name})")
    folder = Path(tempfile.mkdtemp(prefix=f"hexdbt-dbt-cloud-{run_id}-"))
    try:
        return _plan_from_steps(client, run, folder, mappings.for_run(run), environ)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _plan_from_steps(
    client: DbtCloudClient,
    run: CloudRun,
    folder: Path,
    mappings_file: Path | None,
    environ: Mapping[str, str] | None,
) -> CloudPlan | NothingToPlan:
    steps: list[tuple[int, Invocation]] = []
    downloaded = 0
    for step in run.steps:
        command = _step_command(step.name)
        raw = client.artifact(run.run_id, "run_results.json", step=step.index)
        if raw is None:
            # Every dbt step of a successful run wrote its file: not there yet. Any other step
            # (clone, profile, deps), or a step of a failed run that dbt never got into, has none.
            writes_results = command is not None and command not in _NO_RESULTS_COMMANDS
            if writes_results and run.status != ERROR:
                raise NotYet(
                    f"step {step.index} ({step.name}): run_results.json not there yet", step
                )
            continue
        downloaded += len(raw)
        path = folder / f"step-{step.index}" / "run_results.json"
        path.parent.mkdir()
        path.write_bytes(raw)
        steps.append((step.index, load_run_results(path)))
    if not steps:
        if run.status == ERROR:
            return NothingToPlan("failed before any dbt step wrote run_results.json")
        return NothingToPlan("no step wrote run_results.json: no dbt command ran")
    last_index, last = steps[-1]
    manifest: Manifest | None = None
    raw_manifest = client.artifact(run.run_id, "manifest.json", step=last_index)
    if raw_manifest is not None:
        downloaded += len(raw_manifest)
        manifest_path = folder / f"step-{last_index}" / "manifest.json"
        manifest_path.write_bytes(raw_manifest)
        manifest = load_manifest(manifest_path)
    merged = _merged(run.run_id, [invocation for _, invocation in steps])
    template_invocation: dict[str, Any] = {
        **invocation_context(last),
        "dbt_cloud": {
            "run_id": run.run_id,
            "job_id": run.job_id,
            "environment_id": run.environment_id,
        },
    }
    mappings, _, _ = load_mapping_set(mappings_file, manifest)
    plan = make_plan(
        merged, mappings, manifest, environ=environ, template_invocation=template_invocation
    )
    handled = tuple(
        (invocation.invocation_id, invocation.command, index)
        for index, invocation in steps
        if invocation.invocation_id
    )
    return CloudPlan(plan, handled, downloaded)


def _merged(run_id: str, invocations: list[Invocation]) -> Invocation:
    """The steps as one invocation: the results of the steps that build or test, in order (a
    later result for a node wins, as ``Invocation`` counts a node by its last result); its
    command, the last one that refreshes data (else the last step's)."""
    counted = [
        invocation
        for invocation in invocations
        if invocation.command in REFRESHING_COMMANDS or invocation.command == "test"
    ]
    refreshing = [inv for inv in counted if inv.command in REFRESHING_COMMANDS]
    command = (refreshing or invocations)[-1].command
    last = invocations[-1]
    return Invocation(
        invocation_id=trigger_invocation_id(run_id),
        command=command,
        started_at=invocations[0].started_at,
        generated_at=last.generated_at,
        dbt_version=last.dbt_version,
        vars=last.vars,
        results=tuple(result for invocation in counted for result in invocation.results),
    )


def _epoch_s(api_time: str | None) -> float | None:
    """One of the Admin API's times (``finished_at``, ``created_at``) in epoch seconds."""
    if not api_time:
        return None
    try:
        return from_iso(api_time)  # a time without a zone is UTC, not this machine's
    except ValueError:
        return None


def _id_number(run: CloudRun) -> int:
    return int(run.run_id) if run.run_id.isdigit() else 0


def _pages_back_to(run: CloudRun, mark: int | None, cutoff: float) -> bool:
    """Whether polling pages no further back than ``run``'s page
    (``DbtCloudFeeder._runs_since_last_poll``)."""
    if mark is not None and _id_number(run) <= mark:
        return True
    finished = _epoch_s(run.finished_at)
    return run.ended and finished is not None and finished < cutoff


def _poll_mark(runs: list[CloudRun]) -> int | None:
    """The run down to which the next poll pages back: the oldest one listed that has not
    ended (it may end before the next poll), else the newest listed (None: none listed)."""
    running = [_id_number(run) for run in runs if not run.ended]
    if running:
        return min(running)
    return max((_id_number(run) for run in runs), default=None)


@dataclass
class _Backoff:
    """A run that could not be planned yet: when to try again, and since when it fails."""

    due_at: float
    delay_s: float
    first_failed_at: float | None = None  # None: only the state has failed it so far
    attempts: int = 0
    said: bool = False


@dataclass(frozen=True, slots=True)
class _Submitted:
    """The engine's answer for a run's plan, handed from the engine's thread to the worker."""

    record: DbtCloudRunRecord
    fields: dict[str, Any]
    failure: BaseException | None


class DbtCloudFeeder:
    """Takes ended dbt Cloud runs from the ledger to the engine, and (with polling) finds them.

    ``start`` runs a worker thread (and a polling thread); ``wake`` makes the worker look at the
    ledger now (the webhook route calls it after its answer); ``stop`` ends both.
    """

    name = "dbt-cloud"

    def __init__(
        self,
        engine: Engine,
        ledger: Ledger,
        client: DbtCloudClient,
        options: DbtCloudOptions,
        log: EventLog,
        *,
        clock: Clock,
        metrics: DaemonMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.ledger = ledger
        # Shared by the worker and the polling thread: one cool-down for both (under the
        # client's lock); requests' session pools its connections in thread-safe urllib3 pools.
        self.client = client
        self.options = options
        self.log = log
        self.clock = clock
        self.events = InvocationEvents(log, metrics)
        self.source = f"{SOURCE_PREFIX}:{options.account_id}"
        self.metrics = metrics
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        # The worker thread's alone: the engine's thread hands its answers over through
        # ``_submitted_runs`` (a dict changed by another thread while the worker iterates it
        # would raise), and the webhook's handler only sets ``_wake``.
        self._backoff: dict[str, _Backoff] = {}
        self._allowed: dict[str, str | None] = {}  # job id -> why not (None: allowed)
        self._in_flight: set[str] = set()
        self._submitted_runs: queue.SimpleQueue[_Submitted] = queue.SimpleQueue()
        # The polling thread's alone: per job listed (None: the account), the run id down to
        # which the next poll pages back (the oldest run not ended, else the newest one seen).
        self._poll_marks: dict[str | None, int] = {}
        # Said by the worker, the polling thread and the engine's: once until the state is back.
        self._state_said_lock = threading.Lock()
        self._state_said = False

    # -- running ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._threads.append(
            threading.Thread(target=self._work, name="hexdbt-dbt-cloud", daemon=True)
        )
        if self.options.poll_interval_s is not None:
            self._threads.append(
                threading.Thread(target=self._poll_loop, name="hexdbt-dbt-cloud-poll", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def job_listed(self, job_id: str) -> bool:
        """Whether a webhook's job may be recorded at all: with ``--dbt-cloud-jobs``, only
        those (the deployment check needs the API: the worker makes it, after the answer)."""
        return self.options.job_ids is None or job_id in self.options.job_ids

    # -- the worker ------------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            next_due = self.take_due()
            wait_s = RETRY_CAP_S if next_due is None else max(0.0, next_due - self.clock.now())
            self.clock.wait(self._wake, wait_s)

    def take_due(self) -> float | None:
        """Take the engine's answers for the plans submitted, then every run the ledger holds
        unsettled whose retry is due; returns when the next retry is due (None: none waits)."""
        self._take_submitted()
        try:
            runs = self.ledger.dbt_cloud_runs(unsettled_only=True)
        except StateError as exc:
            self._state_failed(exc)
            return self.clock.now() + RETRY_FIRST_S
        with self._state_said_lock:
            self._state_said = False
        now = self.clock.now()
        for record in runs:
            if self._stopping.is_set():
                break
            backoff = self._backoff.get(record.run_id)
            if backoff is not None and backoff.due_at > now:
                continue
            if record.run_id in self._in_flight:
                continue
            self._take(record)
        dues = [backoff.due_at for backoff in self._backoff.values()]
        return min(dues) if dues else None

    def _state_failed(self, exc: HexdbtError) -> None:
        with self._state_said_lock:
            said, self._state_said = self._state_said, True
        if not said:
            self.log.emit("dbt_cloud_state_unavailable", "error", **error_fields(exc))

    def _take(self, record: DbtCloudRunRecord) -> None:
        # A process killed here has answered the webhook (the run is in the ledger) and planned
        # nothing: its next start, or another process, plans the run.
        crash_point("dbt-cloud-before-plan")
        run_id = record.run_id
        fields = {"run_id": run_id, "job_id": record.job_id, "seen_via": record.seen_via}
        try:
            if self.ledger.has_invocation(trigger_invocation_id(run_id)):
                self._settle(record, "planned", fields, say=False)
                return
            why_not = self._not_allowed(record)
            if why_not is not None:
                self._settle(record, why_not, fields)
                return
            started = self.clock.now()
            planned = plan_cloud_run(self.client, run_id, self.options.mappings)
        except StateError as exc:
            self._state_failed(exc)
            self._retry_later(record, fields, exc)
            return
        except (NotYet, DbtCloudError) as exc:
            self._retry_later(record, fields, exc)
            return
        except HexdbtError as exc:  # an artifact or a mapping that cannot be planned
            self._settle(record, f"cannot be planned: {exc}", fields, level="error")
            return
        self._backoff.pop(run_id, None)
        if isinstance(planned, NothingToPlan):
            self._settle(record, planned.reason, fields)
            return
        self._submit(record, planned, fields, fetch_s=self.clock.now() - started)

    def _submit(
        self, record: DbtCloudRunRecord, planned: CloudPlan, fields: dict[str, Any], fetch_s: float
    ) -> None:
        try:
            taken = self.ledger.handle_dbt_cloud_steps(record.run_id, self.source, planned.steps)
        except StateError as exc:
            self._retry_later(record, fields, exc)
            return
        if taken:
            reason = (
                "its dbt invocations were handled by another way in (the on-run-end hook's"
                f" relay, or a watcher): {', '.join(taken)}"
            )
            self._settle(record, reason, fields)
            return
        plan = planned.plan
        self._in_flight.add(record.run_id)
        submitted = self.engine.submit(plan, source=self.source, only_new=True)
        details = {
            "steps": [index for _, _, index in planned.steps],
            "artifact_bytes": planned.downloaded_bytes,
            "fetch_and_plan_s": round(fetch_s, 3),
        }
        submitted.add_done_callback(
            lambda future: self._submitted(record, plan, future, fields, details)
        )

    def _submitted(
        self,
        record: DbtCloudRunRecord,
        plan: Plan,
        future: Future[list[TriggerRecord] | None],
        fields: dict[str, Any],
        details: dict[str, Any],
    ) -> None:
        """On the engine's thread, once the plan is recorded (or could not be): said, then
        handed to the worker, which alone keeps the runs' retries."""
        invocation_fields = {**fields, "invocation_id": plan.invocation_id}
        self.events.submitted(plan, future, invocation_fields, **details)
        self._submitted_runs.put(_Submitted(record, fields, future.exception()))
        self._wake.set()

    def _take_submitted(self) -> None:
        while True:
            try:
                submitted = self._submitted_runs.get_nowait()
            except queue.Empty:
                return
            record = submitted.record
            self._in_flight.discard(record.run_id)
            if submitted.failure is not None:  # the run stays unsettled: tried again, later
                self._retry_later(record, submitted.fields, submitted.failure)
                continue
            try:
                if self.ledger.settle_dbt_cloud_run(record.run_id, "planned"):
                    self._count("planned")
            except StateError as exc:
                self._state_failed(exc)  # settled by the next look: the invocation is recorded

    def _retry_later(
        self, record: DbtCloudRunRecord, fields: dict[str, Any], exc: BaseException
    ) -> None:
        now = self.clock.now()
        backoff = self._backoff.get(record.run_id)
        if backoff is None:
            backoff = self._backoff[record.run_id] = _Backoff(now, 0.0)
            delay = RETRY_FIRST_S
        else:
            delay = min(RETRY_CAP_S, backoff.delay_s * 2)
        if not isinstance(exc, StateError):  # the state out of reach never gives a run up
            backoff.attempts += 1
            if backoff.first_failed_at is None:
                backoff.first_failed_at = now
            elif now - backoff.first_failed_at >= self.options.give_up_after_s:
                self._give_up(record, fields, backoff, exc)
                return
        if isinstance(exc, DbtCloudError) and exc.retry_after_s is not None:
            delay = max(delay, exc.retry_after_s)
        backoff.due_at, backoff.delay_s = now + delay, delay
        if not backoff.said:  # said once per run, not at every try
            backoff.said = True
            self.log.emit(
                "dbt_cloud_run_waiting",
                "warning",
                **fields,
                **error_fields(exc),
                retry="with a growing interval, up to 5 minutes",
                gives_up_after_s=self.options.give_up_after_s,
            )

    def _give_up(
        self,
        record: DbtCloudRunRecord,
        fields: dict[str, Any],
        backoff: _Backoff,
        exc: BaseException,
    ) -> None:
        """A run that could not be planned for ``give_up_after_s``: settled, said once."""
        assert backoff.first_failed_at is not None  # given up only after a failed try
        waited_s = self.clock.now() - backoff.first_failed_at
        step = exc.step if isinstance(exc, NotYet) else None
        outcome = f"given up after {backoff.attempts} tries in {waited_s:.0f} s: {exc}"
        try:
            settled = self.ledger.settle_dbt_cloud_run(record.run_id, outcome)
        except StateError as state_exc:
            self._state_failed(state_exc)  # tried again once the state is back
            backoff.due_at = self.clock.now() + RETRY_FIRST_S
            return
        self._backoff.pop(record.run_id, None)
        if not settled:  # another process settled it first, and said so
            return
        self._count("given_up")
        self.log.emit(
            "dbt_cloud_run_given_up",
            "error",
            **fields,
            step=None if step is None else step.index,
            step_name=None if step is None else step.name,
            attempts=backoff.attempts,
            waited_s=round(waited_s, 1),
            **{
                "hint": "check the run in dbt Cloud; --dbt-cloud-give-up-hours sets how long"
                " hexdbt tries",
                **error_fields(exc),  # the error's own hint, when it has one, says more
            },
        )

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.dbt_cloud_run_settled(outcome)

    def _settle(
        self,
        record: DbtCloudRunRecord,
        outcome: str,
        fields: dict[str, Any],
        *,
        say: bool = True,
        level: str = "info",
    ) -> None:
        self._backoff.pop(record.run_id, None)
        try:
            settled = self.ledger.settle_dbt_cloud_run(record.run_id, outcome)
        except StateError as exc:
            self._state_failed(exc)
            return
        if settled:
            self._count("planned" if outcome == "planned" else "not_planned")
        if settled and say:  # by whichever process settled it: said once
            self.log.emit("dbt_cloud_run_not_planned", level, **fields, reason=outcome)

    def _not_allowed(self, record: DbtCloudRunRecord) -> str | None:
        """Why a run's job is not acted on (None: it is)."""
        job_id = record.job_id
        if self.options.job_ids is not None:
            if job_id in self.options.job_ids:
                return None
            return f"job {job_id} is not in --dbt-cloud-jobs"
        if job_id in self._allowed:
            return self._allowed[job_id]
        job = self.client.job(job_id)
        why_not: str | None = None
        if job.job_type in ("ci", "merge"):
            why_not = f"job {job_id} is a {job.job_type} job: it builds into temporary schemas"
        else:
            kind = self.client.environment_type(job.environment_id or record.environment_id)
            if kind != "deployment":
                why_not = (
                    f"job {job_id} runs in a {kind or 'non-deployment'} environment"
                    f" ({job.environment_id}): only deployment environments start Hex apps"
                )
        self._allowed[job_id] = why_not
        return why_not

    # -- polling --------------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        assert self.options.poll_interval_s is not None
        floor: float | None = None
        while not self._stopping.is_set():
            wait_s = self.options.poll_interval_s
            result = "listed"
            try:
                if floor is None:
                    floor = self._poll_floor()
                self.poll(floor)
            except DbtCloudError as exc:
                if exc.retry_after_s is not None:
                    result = "cool_down"
                    wait_s = max(wait_s, exc.retry_after_s)
                    self.log.emit("dbt_cloud_cool_down", "warning", seconds=round(wait_s, 1))
                else:
                    result = "failed"
                    self.log.emit("dbt_cloud_poll_failed", "warning", **error_fields(exc))
            except StateError as exc:
                result = "failed"
                self._state_failed(exc)
            if self.metrics is not None:
                self.metrics.dbt_cloud_polled(result)
            self.clock.wait(self._stopping, wait_s)

    def _poll_floor(self) -> float:
        """Runs that ended before this are not taken by polling: the first start of polling
        (by any process, unless told to take old runs), else the look-back window."""
        since, first = self.ledger.dbt_cloud_polling_since(self.options.account_id)
        if first:
            self.log.emit(
                "dbt_cloud_polling_started",
                takes_runs_ended_after="the look-back window"
                if self.options.take_old_runs
                else "now",
            )
        return float("-inf") if self.options.take_old_runs else since

    def poll(self, floor: float) -> int:
        """List the allowed jobs' runs since the last poll (``_runs_since_last_poll``) and note
        each ended one the ledger does not know (within the look-back window, and not before
        ``floor``). Returns how many were new."""
        cutoff = max(floor, self.clock.now() - self.options.look_back_s)
        jobs: list[str | None] = [None]  # the account's runs, when no job is listed
        if self.options.job_ids is not None:
            jobs = list(sorted(self.options.job_ids))
        listed = {job_id: self._runs_since_last_poll(job_id, cutoff) for job_id in jobs}
        # A run created while paging shifts the pages: the runs at their edge come twice.
        found = {run.run_id: run for runs in listed.values() for run in runs}
        ended = [
            run
            for run in found.values()
            if run.ended
            and (finished := _epoch_s(run.finished_at)) is not None
            and finished >= cutoff
        ]
        known = self.ledger.known_dbt_cloud_runs([run.run_id for run in ended])
        new = 0
        for run in ended:
            if run.run_id in known:
                continue
            record = DbtCloudRunRecord(
                run.run_id, run.job_id, run.environment_id, run.status, "poll", 0.0, None, None
            )
            if self.ledger.note_dbt_cloud_run(record):
                new += 1
                self.log.emit(
                    "dbt_cloud_run_found", run_id=run.run_id, job_id=run.job_id,
                    status=run.status_name,
                )  # fmt: skip
        for job_id, runs in listed.items():  # once every run found is noted
            mark = _poll_mark(runs)
            if mark is not None:
                self._poll_marks[job_id] = mark
        if new:
            self._wake.set()
        return new

    def _runs_since_last_poll(self, job_id: str | None, cutoff: float) -> list[CloudRun]:
        """``job_id``'s runs (None: the account's), newest first, page after page: a busy
        account ends more than a page of runs between two polls. Paging stops at the page that
        reaches the last poll's mark (``_poll_mark``), or a run that ended before ``cutoff``
        (older runs ended before it too, but for one that outlasted a newer run: only a first
        poll, without a mark, can miss that one), or the list's end."""
        mark = self._poll_marks.get(job_id)
        runs: list[CloudRun] = []
        while True:
            page = self.client.runs(job_id, offset=len(runs))
            runs.extend(page)
            if len(page) < RUNS_PAGE or any(_pages_back_to(run, mark, cutoff) for run in page):
                return runs
