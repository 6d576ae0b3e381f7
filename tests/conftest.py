"""Shared fixtures. Heavy fixtures (synthetic cohorts, feature dirs) are session-scoped so the
suite builds them once."""

from __future__ import annotations

import os

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
