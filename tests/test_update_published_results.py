"""updatePublishedResults: the one rule every way in (mapping, CLI flag, Python API) follows."""

from __future__ import annotations

import pytest

from hexdbt.errors import ConfigError
from hexdbt.hex.models import update_published_results_for


@pytest.mark.parametrize(
    ("requested", "input_params", "sent"),
    [
        (None, {}, True),
        (None, {"region": "EMEA"}, False),  # Hex would ignore the params otherwise
        (False, {}, False),
        (False, {"region": "EMEA"}, False),
        (True, {}, True),
    ],
)
def test_unset_follows_the_input_params_and_a_choice_is_kept(
    requested: bool | None, input_params: dict[str, str], sent: bool
) -> None:
    assert update_published_results_for(requested, input_params, where="x") is sent


def test_true_with_input_params_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        update_published_results_for(True, {"region": "EMEA"}, where="--update-published")
    assert str(caught.value) == (
        "--update-published is true and input params are given, but Hex ignores input params"
        " when it writes published results"
    )
    assert caught.value.hint == (
        "leave --update-published unset (false is then sent for runs with params),"
        " or drop the input params"
    )
    assert caught.value.exit_code == 2
