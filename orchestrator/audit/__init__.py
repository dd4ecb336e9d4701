"""Audit: the tamper-evident hash chain over the stored history, the history itself filtered and
exported, read models as of a past instant, and a replay that checks the live read models."""
