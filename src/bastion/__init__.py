"""Bastion: a self-hostable Python package index built for supply-chain security."""

__version__ = "0.1.0"
