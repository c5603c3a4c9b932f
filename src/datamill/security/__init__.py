"""Tokens, secret encryption, path and outbound-address guards."""
