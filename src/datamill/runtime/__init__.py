"""Worker processes: claim runs, execute them, heartbeat, cancel, log."""
