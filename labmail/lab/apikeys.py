"""API keys of the lab's Mailcow-compatible API: one admin key, one key per student domain (file 0600)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from .._files import atomic_write_text
from ..state import Layout


def _path(state_dir: Path) -> Path:
    return Layout(state_dir).api_keys_file


def api_keys(state_dir: Path) -> dict:
    """{"admin": key, "domains": {domain: key}}, created on first use."""
    try:
        return json.loads(_path(state_dir).read_text(encoding="utf-8"))
    except FileNotFoundError:
        keys = {"admin": secrets.token_hex(16).upper(), "domains": {}}
        atomic_write_text(_path(state_dir), json.dumps(keys, indent=2) + "\n", mode=0o600)
        return keys


def ensure_domain_key(state_dir: Path, domain: str) -> str:
    """The domain administrator's key (created once): it may change only this domain."""
    keys = api_keys(state_dir)
    if domain not in keys["domains"]:
        keys["domains"][domain] = secrets.token_hex(16).upper()
        atomic_write_text(_path(state_dir), json.dumps(keys, indent=2) + "\n", mode=0o600)
    return keys["domains"][domain]
