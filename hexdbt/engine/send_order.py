"""Which waiting trigger goes first when Hex's budget cannot send them all: the send order.

    rank = priority + (1 + 10 * views_share) * unserved_s / aging_s      (aging_s: 6 hours)

- ``priority``: the mapping's ``priority:`` (an integer, higher first; default 0);
- ``unserved_s``: how long the app's oldest refresh that no run covers has waited (not the
  waiting trigger's age, which a newer build resets). Waiting raises every app's rank at a
  stated rate, so none starves: one priority level per six hours for an app nobody views;
- ``views_share``: the app's views in Hex over the last seven days as a share of the most
  viewed app's, in [0, 1]. The apps people use most age faster, up to 11 times (one level per
  33 minutes): among apps of one priority, a much viewed app goes before a little viewed one
  that has waited up to 11 times as long. This is weighted fair queueing: under a budget too
  small for all, each app is served about as often as its weight, rather than the most viewed
  taking every slot and the rest starving. Ties go to the more viewed.

The views come from ListProjects (``analytics.appViews.lastSevenDays``), read at most once per
``max_age_s`` and only while triggers compete for the budget, each page on a slot of the budget's
own (``AppViews``). Without them (a token without the scope, a Hex that fails) the share is 0
for every app, and the order is priority, then waiting.
"""

from __future__ import annotations

from collections.abc import Callable

from hexdbt.errors import HexApiError
from hexdbt.hex.budget import CallKind, Slot
from hexdbt.hex.client import MAX_PAGE_SIZE, HexClient

# One priority level per this much unserved age, for an app nobody views (the aging rate
# docs/mapping.md states).
AGING_S = 6 * 3600.0
# The most viewed app ages this many times faster than one nobody views.
VIEWS_WEIGHT = 10.0
# Hex's views are read again at most this often.
VIEWS_MAX_AGE_S = 3600.0


def send_rank(
    priority: int, views_share: float, unserved_s: float, aging_s: float
) -> tuple[float, float]:
    """The rank of a waiting trigger: the highest is sent first (views break ties)."""
    weight = 1.0 + VIEWS_WEIGHT * views_share
    return priority + weight * max(0.0, unserved_s) / aging_s, views_share


class AppViews:
    """Hex's figure of how much each app is used, read within the budget, a page per turn."""

    def __init__(
        self,
        client: HexClient,
        *,
        max_age_s: float = VIEWS_MAX_AGE_S,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        self._max_age_s = max_age_s
        self._log = log or (lambda _message: None)
        self._views: dict[str, int] = {}
        self._most = 0
        self._read_at = float("-inf")
        self._reading: dict[str, int] = {}
        self._cursor: str | None = None

    def share(self, project_id: str) -> float:
        """The app's views as a share of the most viewed app's (0 when none are known)."""
        return self._views.get(project_id, 0) / self._most if self._most else 0.0

    def read_if_due(self, now: float) -> None:
        """Read the next page of ListProjects when the figures are older than ``max_age_s`` and
        the budget has a call free now; never waits."""
        if now - self._read_at < self._max_age_s:
            return
        slot: Slot | None = None
        budget = self._client.budget
        if budget is not None:
            taken = budget.take_now(CallKind.OTHER, 1)
            if not taken:
                return
            slot = taken[0]
        try:
            page = self._client.list_projects(
                limit=MAX_PAGE_SIZE, after=self._cursor, include_components=False, slot=slot
            )
        except HexApiError as exc:
            self._log(f"cannot read the apps' views in Hex ({exc}); ordering without them")
            self._read_at, self._reading, self._cursor = now, {}, None
            return
        self._reading.update({project.id: project.app_views_7d for project in page.values})
        if page.after and page.values and page.after != self._cursor:
            self._cursor = page.after  # the next page on a later turn
            return
        self._views, self._reading, self._cursor = self._reading, {}, None
        self._most = max(self._views.values(), default=0)
        self._read_at = now
