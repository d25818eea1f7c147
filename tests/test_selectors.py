"""Selectors over the manifest, with dbt's semantics for each kind."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

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


@pytest.fixture(params=["lookups read with the manifest", "lookups gathered by the index"])
def manifest(tmp_path: Path, request: pytest.FixtureRequest) -> Manifest:
    """The same manifest twice: as load_manifest returns it (with NodeLookups gathered while
    reading), and as a Manifest built by hand without them; selectors must not tell them apart."""
    nodes = [
        model("stg_orders", "staging", tags=("staging",), config={"materialized": "view"}),
        model("customers", "marts/core", tags=("core", "pii"), config={"meta": {"hex": True}}),
        model("orders", "marts/finance", tags=("finance",)),
        model("revenue_daily", "marts/finance", tags=("finance", "daily")),
        model("attribution", "marts/marketing", tags=("marketing",)),
        model("raw_orders", resource_type="seed"),
        model("util_dates", "utils", package="date_utils"),
    ]
    loaded = load_manifest(write_json(tmp_path / "manifest.json", manifest_document(nodes)))
    assert loaded.lookups is not None
    return loaded if request.param.endswith("manifest") else replace(loaded, lookups=None)


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
        ("config.meta.hex:True", {"customers"}),  # booleans compare case-insensitively
        ("config.meta.hex:false", set()),
        ("config.meta:true", set()),
        ("config.tags:daily", {"revenue_daily"}),
        ("model.shop.orders", {"orders"}),
        ("model.shop.nope", set()),
        ("tag:nope", set()),
        ("path:models/mart", set()),  # a folder prefix is not a folder
        ("path:models/marts/core/customers", set()),  # nor a file name without its extension
        ("marts.fin*", {"orders", "revenue_daily"}),
        ("shop.marts.*", {"customers", "orders", "revenue_daily", "attribution"}),
        ("shop", {"stg_orders", "customers", "orders", "revenue_daily", "attribution", "raw_orders"}),
        ("utils", {"util_dates"}),  # a top folder of another package
        ("date_utils.*", {"util_dates"}),
        ("package:date*", {"util_dates"}),
        ("package:nope", set()),
        ("config.nope:x", set()),
    ],
)  # fmt: skip
def test_each_selector_kind_matches_like_dbt(
    manifest: Manifest, selector: str, expected: set[str]
) -> None:
    index = SelectorIndex(manifest)
    matched = index.resolve(parse_selector(selector))
    assert {manifest.nodes[uid].name for uid in matched} == expected
    assert index.resolve(parse_selector(selector)) is matched  # resolved once, then cached


def test_nodes_with_the_same_config_text_share_it_and_are_each_selected(tmp_path: Path) -> None:
    view = {"materialized": "view", "meta": {"hex": True}}
    nodes = [
        model("a", "x"),
        model("b", "y"),
        model("c", "y", config=view),
        model("d", config=view),
    ]
    manifest = load_manifest(write_json(tmp_path / "manifest.json", manifest_document(nodes)))
    a, b, c, d = (manifest.nodes[f"model.shop.{name}"] for name in "abcd")
    assert a.config is b.config
    assert c.config is d.config
    assert a.config is not c.config
    assert c.meta is d.meta
    assert dict(c.meta) == {"hex": True}
    index = SelectorIndex(manifest)
    for selector, expected in (
        ("config.materialized:table", {"a", "b"}),
        ("config.materialized:view", {"c", "d"}),
        ("config.meta.hex:true", {"c", "d"}),
    ):
        matched = index.resolve(parse_selector(selector))
        assert {manifest.nodes[uid].name for uid in matched} == expected, selector


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


def _node(name: str, file_path: str, fqn: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "unique_id": f"model.shop.{name}",
        "name": name,
        "resource_type": "model",
        "package_name": "shop",
        "path": file_path.removeprefix("models/"),
        "original_file_path": file_path,
        "fqn": fqn,
        **extra,
    }


def test_folders_and_fqn_prefixes_stop_at_a_separator(tmp_path: Path) -> None:
    """A folder or fqn head named like the start of another one does not select it."""
    nodes = [
        _node("a", "models/fin/a.sql", ["shop", "fin", "a"]),
        _node("b", "models/fin/deep/b.sql", ["shop", "fin", "deep", "b"]),
        _node("c", "models/fin_extra/c.sql", ["shop", "fin_extra", "c"]),
        _node("d", "models/fin-old/d.sql", ["shop", "fin-old", "d"]),
        _node("e", "models/fin.sql", ["shop", "fin"]),  # a model named like the folder
    ]
    manifest = load_manifest(write_json(tmp_path / "m.json", manifest_document(nodes)))
    for candidate in (manifest, replace(manifest, lookups=None)):
        index = SelectorIndex(candidate)

        def names(text: str, index: SelectorIndex = index) -> set[str]:
            return {uid.rsplit(".", 1)[1] for uid in index.resolve(parse_selector(text))}

        assert names("path:models/fin") == {"a", "b"}
        assert names("path:models/fin.sql") == {"e"}
        assert names("fin") == {"a", "b", "e"}
        assert names("fin.*") == {"a", "b"}
        assert names("shop.fin.*") == {"a", "b"}
        assert names("fin.deep") == {"b"}
        # a wildcard is a glob over the rest of the fqn after the package, dots included
        assert names("fin*") == {"a", "b", "c", "d", "e"}
        assert names("fin_*") == {"c"}


def test_versioned_model_names_are_split_into_fqn_parts(tmp_path: Path) -> None:
    nodes = [_node("dim", "models/marts/dim.sql", ["shop", "marts", "dim.v2"], tags=["x"])]
    manifest = load_manifest(write_json(tmp_path / "m.json", manifest_document(nodes)))
    for candidate in (manifest, replace(manifest, lookups=None)):
        index = SelectorIndex(candidate)
        for text in ("marts.dim.*", "marts.dim.v2", "marts.*", "dim", "marts", "tag:x"):
            assert index.resolve(parse_selector(text)) == {"model.shop.dim"}, text


def test_lookups_gathered_while_reading_list_nodes_by_name_tag_package_and_fqn_head() -> None:
    manifest = load_manifest(FIXTURES / "manifest_v12.json")
    lookups = manifest.lookups
    assert lookups is not None
    assert lookups.by_name["orders"] == ["model.jaffle_shop.orders"]
    own = {uid for uid, node in manifest.nodes.items() if node.package_name == "jaffle_shop"}
    assert len(lookups.by_package) > 1  # the fixture also holds an installed package
    assert set(lookups.by_package["jaffle_shop"]) == own
    assert set(lookups.by_fqn_head["jaffle_shop"]) == own
    assert "model.jaffle_shop.stg_orders" in lookups.by_fqn_head["staging"]
    tagged = {uid for uid, node in manifest.nodes.items() if node.tags}
    assert {uid for ids in lookups.by_tag.values() for uid in ids} == tagged


def test_resolve_all_is_the_union_of_its_selectors(manifest: Manifest) -> None:
    index = SelectorIndex(manifest)
    selectors = [parse_selector(text) for text in ("tag:finance", "customers", "orders")]
    names = {manifest.nodes[uid].name for uid in index.resolve_all(selectors)}
    assert names == {"orders", "revenue_daily", "customers"}
    assert index.resolve_all([]) == frozenset()
    assert index.resolve_all(selectors[1:2]) == {"model.shop.customers"}
