"""What several test modules share: configs, a fault-injecting HTTP server, run helpers."""
