"""Sphinx configuration for syncsmtp's documentation."""

from __future__ import annotations

project = "syncsmtp"
author = "the syncsmtp authors"
copyright = "2026, the syncsmtp authors"
release = "0.1.0"

extensions = ["sphinx.ext.autodoc"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
