"""From what dbt did to which Hex projects to run.

- ``rules``: pure, no I/O and no clock: ``make_plan(invocation, mappings, manifest) -> Plan``;
- ``files``: reads run_results.json, manifest.json and the mapping file, then calls ``rules``;
- ``inputs``: a watched target's manifest, selector index and mapping, kept parsed between
  invocations (``hexdbt watch``);
- ``stream``: the same rules fed dbt's events one by one while dbt runs.
"""
