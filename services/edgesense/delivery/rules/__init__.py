"""Threshold alert rules in delivery: the rules streamed from the registry
(`index`, `link`), and what judging the readings of a stored batch writes
(`alerts`). The rule semantics themselves are edgesense.common.thresholds.
"""
