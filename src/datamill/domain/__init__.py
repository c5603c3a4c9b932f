"""Pydantic models of the resources and pure validation rules (no I/O)."""
