"""PEP 458 repository: keys, metadata, the snapshot process; client/ holds the verifying client."""
