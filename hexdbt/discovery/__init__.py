"""Which dbt models each Hex app reads, learnt from Hex (``hexdbt discover``).

- ``fetch``: the workspace's published projects and the tables each reads (GetQueriedTables),
  inside the shared rate budget;
- ``proposal``: those tables matched to the manifest's relations, the mapping they propose and
  the drift between it and the mapping file;
- ``cache``: the last discovery in the state folder, which ``discover: auto`` plans from;
- ``write``: the proposal merged into hex_mappings.yml, comments and hand-written keys kept.
"""
