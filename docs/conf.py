"""Sphinx configuration for syncsmtp's documentation.

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
Only Sphinx's built-in extensions are used, and no external inventories: the
build needs no network.
"""

from __future__ import annotations

from typing import Any

import syncsmtp

project = "syncsmtp"
author = "the syncsmtp authors"
copyright = "2026, the syncsmtp authors"
release = syncsmtp.__version__
version = release

extensions = ["sphinx.ext.autodoc"]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = f"syncsmtp {release}"


# The public names live in private modules (syncsmtp.errors, syncsmtp.result,
# ...) and are documented under their top-level names (syncsmtp.Reply). Point
# references to the module-level names, as written by autodoc in signatures and
# base classes, at the documented ones.


def _public_name(target: str) -> str | None:
    module, _, name = target.rpartition(".")
    if name not in syncsmtp.__all__:
        return None
    if module == "" or (module.startswith("syncsmtp.") and not module.startswith("syncsmtp.testing")):
        return f"syncsmtp.{name}"
    return None


def _process_bases(app: Any, name: str, obj: Any, options: Any, bases: list[Any]) -> None:
    for index, base in enumerate(bases):
        if isinstance(base, type) and base.__module__.startswith("syncsmtp."):
            public = _public_name(f"{base.__module__}.{base.__name__}")
            if public is not None and getattr(syncsmtp, base.__name__) is base:
                bases[index] = f":py:class:`{public}`"


def _missing_reference(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    if node.get("refdomain") != "py":
        return None
    public = _public_name(node.get("reftarget", ""))
    if public is None:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node.get("refdoc", ""), app.builder, node.get("reftype", "obj"), public, node, contnode
    )


def setup(app: Any) -> None:
    app.connect("autodoc-process-bases", _process_bases)
    app.connect("missing-reference", _missing_reference)
