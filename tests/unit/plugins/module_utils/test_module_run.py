"""module_run: the checks shared by the modules and their action plugins."""

from __future__ import annotations

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils.module_run import not_positive


@pytest.mark.parametrize(
    "params, problem",
    [
        ({"timeout": 5.0, "poll": 1}, None),
        ({"timeout": None, "poll": 1}, None),  # unset optional values are the spec's business
        ({"timeout": 0.0, "poll": 1}, "timeout must be greater than 0, got 0"),
        ({"timeout": 2.5, "poll": -1}, "poll must be greater than 0, got -1"),
        ({"timeout": -0.5, "poll": 0}, "timeout must be greater than 0, got -0.5"),  # the first one named
    ],
)
def test_not_positive_names_the_first_option_that_is_not_greater_than_zero(params, problem):
    assert not_positive(params, ("timeout", "poll")) == problem
