"""Placeholder until the logsearch sink lands."""
