"""Deliberately wrong implementations: each makes one real-world mistake, and a check must
name it (tests/test_update_check.py)."""
