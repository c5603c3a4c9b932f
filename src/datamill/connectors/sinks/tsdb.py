"""Placeholder until the tsdb sink lands."""
