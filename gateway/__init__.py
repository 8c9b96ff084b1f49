"""The Pi gateway service: ingest, verify, filter, aggregate, batch, store, uplink."""
