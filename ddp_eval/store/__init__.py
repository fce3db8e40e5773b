"""Where predictions live: per-rank shards, the run identity, the manifest, gathering, atomic writes."""
