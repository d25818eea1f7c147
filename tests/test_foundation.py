"""The error tree, the clock and the command's skeleton."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from hexdbt import errors
from hexdbt.cli import main
from hexdbt.clock import ManualClock, ScaledClock, from_iso, to_iso


@pytest.mark.parametrize(
    ("error_class", "exit_code"),
    [
        (errors.ConfigError, 2),
        (errors.ArtifactError, 3),
        (errors.HexApiError, 4),
        (errors.HexAuthError, 4),
        (errors.HexPermissionError, 4),
        (errors.HexNotFoundError, 4),
        (errors.HexRejectedError, 4),
        (errors.HexRateLimitedError, 4),
        (errors.HexUnavailableError, 4),
        (errors.HexAmbiguousRunError, 4),
        (errors.RunFailedError, 5),
        (errors.RunTimeoutError, 6),
        (errors.StateError, 7),
    ],
)
def test_each_error_class_carries_the_design_exit_code(
    error_class: type[errors.HexdbtError], exit_code: int
) -> None:
    assert error_class.exit_code == exit_code
    assert issubclass(error_class, errors.HexdbtError)


def test_hex_api_error_names_status_and_trace_id() -> None:
    exc = errors.HexNotFoundError("project not found", status=404, trace_id="t-1")
    assert str(exc) == "project not found (HTTP 404, traceId t-1)"


def test_redact_masks_given_secrets_and_token_shapes() -> None:
    text = "token hxtp_abc123 and Bearer s3cret and my-own-secret"
    assert errors.redact(text, "my-own-secret") == "token *** and Bearer *** and ***"


def test_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(start=100.0)
    clock.sleep(3600)
    clock.advance(0.5)
    assert clock.now() == 3700.5
    assert clock.sleeps == [3600]
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1)


def test_scaled_clock_runs_faster_than_real_time() -> None:
    clock = ScaledClock(1000.0, start=0.0)
    clock.sleep(50)  # 50 ms of real time
    assert 50 <= clock.now() < 5000


def test_iso_round_trip_is_utc_with_z() -> None:
    assert to_iso(1_769_846_400.25) == "2026-01-31T08:00:00.250Z"
    assert to_iso(1_769_846_400.123456, digits=6) == "2026-01-31T08:00:00.123456Z"
    assert from_iso(to_iso(1_769_846_400.123456, digits=6)) == 1_769_846_400.123456
    assert from_iso("2026-01-31T08:00:00Z") == 1_769_846_400.0
    assert from_iso("2026-01-31T09:00:00+01:00") == 1_769_846_400.0


def test_version_and_help() -> None:
    runner = CliRunner()
    version = runner.invoke(main, ["--version"])
    assert version.exit_code == 0
    assert "hexdbt, version" in version.output
    assert "Examples" in runner.invoke(main, ["--help"]).output


def test_python_dash_m_runs_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hexdbt", "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert result.stdout.startswith("hexdbt, version")
