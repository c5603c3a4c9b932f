"""Use cases: each owns its transaction, enforces the rules and names the errors."""
