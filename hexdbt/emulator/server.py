"""The emulator's HTTP server and ``HexEmulator``, the context manager that runs it in a thread.

Standard library only. Each answer is written with one ``sendall`` on a socket with Nagle's
algorithm off: a status poll on a keep-alive connection must not wait out a delayed ACK.
"""

from __future__ import annotations

import contextlib
import email.utils
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from hexdbt.clock import Clock, ManualClock, ScaledClock, SystemClock
from hexdbt.emulator.dbt_cloud import DbtCloudEmulation
from hexdbt.emulator.exchange import Exchange, JsonObject, Request, Response, reason_phrase
from hexdbt.emulator.faults import Fault, FaultRule
from hexdbt.emulator.runs import RunRecord
from hexdbt.emulator.scenario import Scenario, ScenarioError
from hexdbt.emulator.service import HexService

RequestLogger = Callable[[str], None]
_MAX_BODY_BYTES = 10 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "hexdbt-emulator"
    emulator: HexEmulator  # set on the per-emulator subclass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the emulator logs through its own logger, and never the headers."""

    def _serve(self) -> None:
        length_text = self.headers.get("Content-Length") or "0"
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY_BYTES:
            self.close_connection = True
            bad = Request(self.command, self.path, None, b"")
            self._write(
                self.emulator.service.begin(bad), Response(400, b'{"error":"bad Content-Length"}')
            )
            return
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            target=self.path,
            authorization=self.headers.get("Authorization"),
            body=body,
        )
        service = self.emulator.service
        exchange = service.begin(request)
        status = self._carry_out(exchange)
        self.emulator.log(f"{request.method} {request.target} -> {status or 'no answer'}")

    def _carry_out(self, exchange: Exchange) -> int | None:
        service = self.emulator.service
        fault = exchange.fault
        if fault is not None and fault.kind == "error":
            return self._write(exchange, service.fault_response(exchange, fault))
        if fault is not None and fault.kind == "drop":
            self._reset_connection()
            return None
        if fault is not None and fault.kind == "slow" and self.emulator.wait_real(fault.delay_s):
            self._reset_connection()
            return None
        response = service.answer(exchange)
        if fault is not None and fault.kind == "lost_reset":
            self._reset_connection()
            return None
        if fault is not None and fault.kind == "lost_timeout":
            # Journaled as answered: the server does answer, only too late for the client.
            service.finish(exchange, response.status)
            if self.emulator.wait_real(fault.delay_s):
                self._reset_connection()
                return None
        return self._write(exchange, response)

    def _write(self, exchange: Exchange, response: Response) -> int:
        lines = [
            f"HTTP/1.1 {response.status} {reason_phrase(response.status)}",
            # Hex's own clock, as every HTTP server sends it (clients may measure their skew).
            f"Date: {email.utils.formatdate(self.emulator.clock.now(), usegmt=True)}",
        ]
        if response.status != 204:
            lines.append(f"Content-Type: {response.content_type}")
            lines.append(f"Content-Length: {len(response.body)}")
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # Journal first: a client that reads the journal right after its answer must see it.
        self.emulator.service.finish(exchange, response.status)
        self.wfile.write(head + (response.body if response.status != 204 else b""))
        return response.status

    def _reset_connection(self) -> None:
        """Close without an answer; a zero linger makes the peer see a reset, not a clean close."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class HexEmulator:
    """A local Hex API on 127.0.0.1, served from a background thread.

    ``with HexEmulator() as emu:`` serves the default scenario on a free port at ``emu.url``.
    Pass a ``ManualClock`` (shared with the client under test) to move run lifecycles exactly,
    or ``time_scale=60`` to let an hour of Hex pass in a minute of real time.
    """

    def __init__(
        self,
        scenario: Scenario | Mapping[str, Any] | str | Path | None = None,
        clock: Clock | None = None,
        time_scale: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log: RequestLogger | None = None,
    ) -> None:
        if clock is not None and time_scale != 1.0:
            raise ScenarioError("give the emulator either a clock or a time scale, not both")
        if time_scale <= 0:
            raise ScenarioError(f"--time-scale must be above 0, got {time_scale}")
        if clock is None:
            clock = SystemClock() if time_scale == 1.0 else ScaledClock(time_scale)
        self.clock: Clock = clock
        self.host = host
        self.requested_port = port
        self.service = HexService(Scenario.coerce(scenario), clock)
        self._log = log
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ------------------------------------------------------------ running
    def start(self) -> HexEmulator:
        handler = type("EmulatorHandler", (_Handler,), {"emulator": self})
        server = ThreadingHTTPServer((self.host, self.requested_port), handler)
        server.daemon_threads = True
        self._server = server
        host, port = server.server_address[:2]
        shown_host = host if isinstance(host, str) else self.host
        if ":" in shown_host:
            shown_host = f"[{shown_host}]"
        self.url = f"http://{shown_host}:{port}"
        self.service.base_url = self.url
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="hexdbt-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.service.dbt_cloud.stop()
        if self._server is not None:
            server = self._server
            # serve_forever only notices a shutdown when its select() wakes: a connection
            # attempt wakes it at once instead of after a poll interval.
            waiter = threading.Thread(target=server.shutdown, daemon=True)
            waiter.start()
            while waiter.is_alive():
                self._wake(server)
                waiter.join(0.01)
            server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @staticmethod
    def _wake(server: ThreadingHTTPServer) -> None:
        host, port = server.server_address[:2]
        with contextlib.suppress(OSError), socket.create_connection((str(host), port), timeout=0.1):
            pass

    def __enter__(self) -> HexEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1]) if self.url else self.requested_port

    def wait_real(self, seconds: float) -> bool:
        """Wait real seconds (a fault's delay); True when the emulator is stopping meanwhile."""
        return self._stopping.wait(seconds) if seconds > 0 else self._stopping.is_set()

    def log(self, line: str) -> None:
        if self._log is not None:
            self._log(line)

    # ------------------------------------------------------------ control
    @property
    def dbt_cloud(self) -> DbtCloudEmulation:
        """The local dbt Cloud served beside Hex (``hexdbt.emulator.dbt_cloud``)."""
        return self.service.dbt_cloud

    @property
    def scenario(self) -> Scenario:
        return self.service.scenario

    def journal(self) -> list[JsonObject]:
        """Every request received, oldest first (the same list as ``GET /_emulator/requests``)."""
        return self.service.journal()

    def runs(
        self, project_id: str | None = None, *, include_history: bool = False
    ) -> list[RunRecord]:
        """Runs created through RunProject, oldest first (scenario history only when asked)."""
        return self.service.runs(project_id, include_history=include_history)

    def advance(self, seconds: float) -> None:
        """Move a manual clock forward; any other clock refuses."""
        if not isinstance(self.clock, ManualClock):
            raise ScenarioError("advance() needs a ManualClock; this emulator runs on real time")
        self.clock.advance(seconds)

    def reset(self) -> None:
        """Forget runs, the journal, rate windows and faults; keep the scenario and the clock."""
        self.service.reset()

    def load_scenario(self, scenario: Scenario | Mapping[str, Any] | str | Path | None) -> None:
        """Serve another scenario (None: the default); runs, windows and faults start afresh."""
        self.service.load_scenario(Scenario.coerce(scenario))

    def inject_faults(
        self,
        endpoint: str = "*",
        *,
        sequence: list[Fault | Mapping[str, Any] | str | None] | None = None,
        rate: float | None = None,
        fault: Fault | Mapping[str, Any] | str | None = None,
        seed: int = 0,
    ) -> None:
        """Add a fault rule for an operation (``RunProject``, ... or ``*``).

        ``sequence=[{"kind": "error", "status": 502, "body": "html"}, None, "drop"]`` plays one
        entry per matching request (None lets one through); ``rate=0.2, fault="drop", seed=7``
        strikes each matching request with probability 0.2 from a seeded, reproducible RNG.
        """
        rule = FaultRule(
            endpoint,
            sequence=None
            if sequence is None
            else [None if item is None else Fault.coerce(item) for item in sequence],
            rate=rate,
            fault=None if fault is None else Fault.coerce(fault),
            seed=seed,
        )
        self.service.faults.add(rule)

    def clear_faults(self) -> None:
        self.service.faults.clear()
