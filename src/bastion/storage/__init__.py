"""Blob storage behind one interface: local directory (default)."""
