"""Variants of the default policy for tests: a region mode, a category switched off."""

from __future__ import annotations

from safeguards.core.policy import default_policy_text


def policy_text(mode: str | None = None, off: str | None = None, version: str | None = None
                ) -> str:
    """The default policy's TOML with ``[policy] mode`` set, category ``off`` switched off, and
    the version prefixed with ``version``, each where given."""
    text = default_policy_text()
    if version is not None:
        text = text.replace('version = "', f'version = "{version}', 1)
    if mode is not None:
        text = text.replace("[policy]\n", f'[policy]\nmode = "{mode}"\n', 1)
    if off is not None:
        text = text.replace(f"[categories.{off}]\n", f"[categories.{off}]\nenabled = false\n", 1)
    return text
