"""Public and project pages, and the admin pages (HTTP only)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
