"""Touchpoints per channel, standing in for an expensive enrichment step.

It sleeps on purpose (var `slow_model_seconds`, default 5) so that a build visibly keeps going
after the customer and finance marts are done: hexdbt's streaming wrapper should trigger those
Hex apps long before this model ends. Nothing outside the marketing mart depends on it.
"""

import time


def model(dbt, session):
    dbt.config(materialized="table")
    slow_seconds = dbt.config.meta_get("slow_seconds", 5)
    time.sleep(float(slow_seconds))
    orders = dbt.ref("stg_orders")
    return orders.aggregate(
        "channel, count(*) as touchpoints, min(order_date) as first_seen", "channel"
    )
