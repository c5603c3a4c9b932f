"""Stream connectors: the sources a streaming pipeline reads and the sinks it writes."""
