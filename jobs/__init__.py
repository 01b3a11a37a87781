"""The worker side: RQ jobs that drain buffered events to the Memory API."""
