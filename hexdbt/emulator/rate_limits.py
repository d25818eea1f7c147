"""Hex's rate limits: fixed windows per user and bucket, and the headers each answer carries.

RunProject has its own bucket; every other endpoint shares one. Each bucket has a per-minute and
a per-hour limit, both from the scenario's settings. A 429 carries ``Retry-After`` (HTTP's own
header); ``X-RateLimit-*`` headers are sent only when the scenario's ``rate_limit_headers`` asks,
since Hex names none.
"""

from __future__ import annotations

import math

from hexdbt.emulator.exchange import ApiError
from hexdbt.emulator.scenario import Settings

Headers = tuple[tuple[str, str], ...]


class RateWindows:
    """Fixed windows per (user, bucket): a window opens at its first request and lasts its length.

    Not locked: the service's lock guards it.
    """

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str, float], list[float]] = {}

    def clear(self) -> None:
        self._windows.clear()

    def admit_operation(self, settings: Settings, user: str, operation: str, now: float) -> Headers:
        """Count a call of ``operation`` and return its rate headers; a 429 when a window is full."""
        if not settings.limits_enabled:
            return ()
        if operation == "RunProject":
            bucket = "run"
            limits = [
                (settings.minute_window_s, settings.run_project_per_minute),
                (settings.hour_window_s, settings.run_project_per_hour),
            ]
        else:
            bucket = "other"
            limits = [
                (settings.minute_window_s, settings.other_per_minute),
                (settings.hour_window_s, settings.other_per_hour),
            ]
        admitted, headers = self._admit(user, bucket, limits, now)
        if not settings.rate_limit_headers:
            headers = tuple((name, value) for name, value in headers if name == "Retry-After")
        if not admitted:
            raise ApiError(
                429, "rate limit exceeded: retry after the window resets", headers=headers
            )
        return headers

    def _admit(
        self, user: str, bucket: str, limits: list[tuple[float, int]], now: float
    ) -> tuple[bool, Headers]:
        windows: list[tuple[float, int, list[float]]] = []
        for length, limit in limits:
            key = (user, bucket, length)
            window = self._windows.get(key)
            if window is None or now >= window[0] + length:
                window = [now, 0.0]
                self._windows[key] = window
            windows.append((length, limit, window))
        full = [w for w in windows if w[2][1] >= w[1]]
        if full:
            length, limit, window = max(full, key=lambda w: w[2][0] + w[0])
            wait_s = max(1, math.ceil(window[0] + length - now))
            return False, (
                ("Retry-After", str(wait_s)),
                ("X-RateLimit-Limit", str(limit)),
                ("X-RateLimit-Remaining", "0"),
                ("X-RateLimit-Reset", str(wait_s)),
            )
        for _, _, window in windows:
            window[1] += 1
        length, limit, window = min(windows, key=lambda w: (w[1] - w[2][1], w[0]))
        return True, (
            ("X-RateLimit-Limit", str(limit)),
            ("X-RateLimit-Remaining", str(int(limit - window[1]))),
            ("X-RateLimit-Reset", str(max(0, math.ceil(window[0] + length - now)))),
        )
