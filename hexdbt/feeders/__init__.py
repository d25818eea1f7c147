"""The ways in: each hands the engine plans (or direct triggers) and reads back outcomes.

- ``after_build``: ``hexdbt run``, once after ``dbt build``;
- ``dbt_wrapper`` and ``runner_callback``: wrapped around dbt, from its events as they come;
- ``watch``: a daemon next to dbt, from every new run_results.json;
- ``direct``: ``hexdbt trigger`` and ``hexdbt.trigger_hex_project``, without dbt.
"""
