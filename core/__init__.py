"""govedge.core: what every stage shares and nothing else: the wire format, batches, Merkle trees,
epochs and proof bundles, the registry, topics, serial frames, the crash guard."""
