"""Placeholder until the report sink lands."""
