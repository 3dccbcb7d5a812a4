"""Tools built on every layer below: the report, the studies, the training demo, the benches."""
