"""The IoT-Hub ingest service and its verifier."""
