"""The dbt side: artifacts (run_results.json, manifest.json) and where dbt puts them.

Nothing here imports dbt: artifacts are JSON, and importing dbt costs seconds.
"""
