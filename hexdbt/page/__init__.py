"""The status page: every Hex app's freshness, the queue, the budget and the runs, drawn.

Three parts, each usable alone:

- ``hexdbt.page.read_model``: what the page shows, read from the ledger (and the budget) in a
  few queries, as frozen records; no HTML, no HTTP.
- ``hexdbt.page.render``: those records as HTML, server-side with Jinja2 (every value escaped):
  the page, its refreshable part, an invocation's page, and the one-file export of
  ``hexdbt status --html``.
- ``hexdbt.page.routes``: ``page_routes(...)``, the starlette routes a server mounts (``/``,
  ``/invocations/{id}``, the refreshable fragment and the page's script and style), and
  ``hexdbt.page.access``: the guard (a bearer token or a basic-auth password) for the page and
  ``/metrics``, leaving ``/healthz`` and the webhooks open.

starlette is imported only by ``routes``, so that nothing here slows ``hexdbt --help``.
"""
