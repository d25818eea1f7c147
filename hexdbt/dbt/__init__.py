"""The dbt side: artifacts (run_results.json, manifest.json), the relations the manifest names, and
where dbt puts them.

Nothing here imports dbt: artifacts are JSON, and importing dbt costs seconds.
"""
