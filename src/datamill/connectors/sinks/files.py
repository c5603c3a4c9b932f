"""Placeholder until the files sink lands."""
