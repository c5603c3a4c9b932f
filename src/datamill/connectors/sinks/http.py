"""Placeholder until the http sink lands."""
