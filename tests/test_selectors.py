"""Selectors over the manifest, with dbt's semantics for each kind."""

from __future__ import annotations

from pathlib import Path

import pytest
from dbt_shapes import manifest_document, model, write_json

from hexdbt.dbt.artifacts import Manifest, load_manifest
from hexdbt.mapping.selectors import (
    SelectorError,
    SelectorIndex,
    parse_selector,
    resolve_without_manifest,
)

FIXTURES = Path(__file__).parent / "fixtures" / "dbt_artifacts"


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    nodes = [
        model("stg_orders", "staging", tags=("staging",), config={"materialized": "view"}),
        model("customers", "marts/core", tags=("core", "pii"), config={"meta": {"hex": True}}),
        model("orders", "marts/finance", tags=("finance",)),
        model("revenue_daily", "marts/finance", tags=("finance", "daily")),
        model("attribution", "marts/marketing", tags=("marketing",)),
        model("raw_orders", resource_type="seed"),
        model("util_dates", "utils", package="date_utils"),
    ]
    return load_manifest(write_json(tmp_path / "manifest.json", manifest_document(nodes)))


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("customers", {"customers"}),
        ("raw_orders", {"raw_orders"}),  # seeds are data too
        ("marts", {"customers", "orders", "revenue_daily", "attribution"}),  # a top folder
        ("marts.finance", {"orders", "revenue_daily"}),
        ("marts.finance.*", {"orders", "revenue_daily"}),
        ("shop.marts.finance.*", {"orders", "revenue_daily"}),
        ("marts.*.orders", {"orders"}),
        ("*", {"stg_orders", "customers", "orders", "revenue_daily", "attribution", "raw_orders", "util_dates"}),
        ("rev*", {"revenue_daily"}),
        ("fqn:marts.core", {"customers"}),
        ("tag:finance", {"orders", "revenue_daily"}),
        ("tag:p*", {"customers"}),
        ("path:models/marts/finance", {"orders", "revenue_daily"}),
        ("path:models/marts/finance/", {"orders", "revenue_daily"}),
        ("path:./models/marts/core/customers.sql", {"customers"}),
        ("models/marts/core", {"customers"}),  # a bare path is a path selector, like dbt
        ("path:models/marts/*/orders.sql", {"orders"}),
        ("path:seeds", {"raw_orders"}),
        ("package:date_utils", {"util_dates"}),
        ("package:this", {"stg_orders", "customers", "orders", "revenue_daily", "attribution", "raw_orders"}),
        ("config.materialized:view", {"stg_orders"}),
        ("config.meta.hex:true", {"customers"}),
        ("config.tags:daily", {"revenue_daily"}),
        ("model.shop.orders", {"orders"}),
        ("model.shop.nope", set()),
        ("tag:nope", set()),
        ("path:models/mart", set()),  # a folder prefix is not a folder
    ],
)  # fmt: skip
def test_each_selector_kind_matches_like_dbt(
    manifest: Manifest, selector: str, expected: set[str]
) -> None:
    index = SelectorIndex(manifest)
    matched = index.resolve(parse_selector(selector))
    assert {manifest.nodes[uid].name for uid in matched} == expected
    assert index.resolve(parse_selector(selector)) is matched  # resolved once, then cached


def test_selectors_over_a_real_manifest() -> None:
    manifest = load_manifest(FIXTURES / "manifest_v12.json")
    index = SelectorIndex(manifest)
    assert index.resolve(parse_selector("orders")) == {"model.jaffle_shop.orders"}
    staging = index.resolve(parse_selector("path:models/staging"))
    assert staging
    assert all(
        manifest.nodes[uid].original_file_path.startswith("models/staging/") for uid in staging
    )
    assert index.resolve(parse_selector("package:jaffle_shop")) >= staging


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "an empty selector"),
        ("+orders", "graph and set operators"),
        ("orders+", "graph and set operators"),
        ("@orders", "graph and set operators"),
        ("orders customers", "graph and set operators"),
        ("tag:a,tag:b", "graph and set operators"),
        ("tag:", "nothing after tag:"),
        ("config.:x", "config needs a key"),
        ("pakage:x", "unknown selector method 'pakage' (did you mean 'package'?)"),
        ("source:raw.orders", "unknown selector method 'source'"),
    ],
)
def test_unsupported_selectors_are_refused_with_a_reason(text: str, problem: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_selector(text)
    assert problem in str(caught.value)


def test_without_a_manifest_bare_names_match_node_names_in_the_results() -> None:
    result_ids = [
        "model.shop.customers",
        "model.shop.orders.v2",
        "seed.shop.raw_orders",
        "test.shop.unique_customers_id.abc",
    ]
    selectors = [
        parse_selector(text)
        for text in ("customers", "orders", "tag:finance", "seed.shop.raw_orders")
    ]
    matched, unresolved = resolve_without_manifest(selectors, result_ids)
    assert matched == {"model.shop.customers", "model.shop.orders.v2", "seed.shop.raw_orders"}
    assert [selector.text for selector in unresolved] == ["tag:finance"]
    assert parse_selector("customers").needs_manifest is False
    assert parse_selector("marts.*").needs_manifest is True
