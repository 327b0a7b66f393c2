"""Vulnerability advisories: OSV ingest, range matching, audit, the OSV query endpoint, applications."""
