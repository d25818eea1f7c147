"""`make demo`: filled in as the pieces land."""

print("hexdbt demo: nothing to show yet")
