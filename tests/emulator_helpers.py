"""Shared by the emulator's tests: a requests session that speaks to an emulator as a client would."""

from __future__ import annotations

from typing import Any

import requests

from hexdbt.emulator import HexEmulator

CUSTOMER_HEALTH = "5a8591dd-4039-49df-9202-96385ba3eff8"
FINANCE_OVERVIEW = "7c2e4b10-9d8a-4f3e-b6a1-2f0c3d9e8a11"
MARKETING_ATTRIBUTION = "b3d9f6a2-1e47-4c85-9a30-6e2f7d1c5b42"
EXECUTIVE_KPIS = "e8a41c7d-3b52-4f96-8d07-9c1a2b3e4f53"


class HexApi:
    """A thin client for tests: absolute paths under /api/v1, a bearer token, no retries."""

    def __init__(self, emulator: HexEmulator, token: str | None = "hxtp_test_token") -> None:
        self.emulator = emulator
        self.session = requests.Session()
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def __enter__(self) -> HexApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return self.session.request(method, self.emulator.url + "/api/v1" + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def run(self, project_id: str, body: dict[str, Any] | None = None) -> requests.Response:
        return self.post(f"/projects/{project_id}/runs", json=body or {})

    def status(self, project_id: str, run_id: str) -> dict[str, Any]:
        response = self.get(f"/projects/{project_id}/runs/{run_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def scenario_with(**project: Any) -> dict[str, Any]:
    """A one-project scenario document; keyword arguments fill in the project."""
    return {"projects": [{"id": "p-1", "title": "Project one", **project}]}
