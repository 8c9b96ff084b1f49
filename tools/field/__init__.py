"""govedge.tools.field: what a technician runs in the field: provisioning, flashing, the node's log, wiring drawings."""
