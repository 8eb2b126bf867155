"""Where API keys come from: the environment or a secrets file outside the repository.

Never ``bastion.yaml``: a config file gets committed, pasted into issues and copied between
machines; a key in it is a key on GitHub sooner or later. So the config names *which* venue
to trade and this module finds its credentials in one of two places:

* environment variables ``BASTION_<VENUE>_<NAME>`` (``BASTION_KRAKEN_API_KEY``,
  ``BASTION_KRAKEN_API_SECRET``, ``BASTION_HYPERLIQUID_PRIVATE_KEY`` …), which win;
* a YAML file (``$BASTION_SECRETS_FILE``, default ``~/.bastion/secrets.yaml``) of the form
  ``kraken: {api_key: ..., api_secret: ...}`` and ``alerts: {urls: [...]}``.

The file is refused when it lies inside a git working tree (it would be one ``git add -A`` away
from being published) or when others can read it (mode wider than 0600). Every value loaded is
registered with the log redactor before anything else sees it, so it cannot reach a log line.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bastion.ops.logs import register_secret
from bastion.venues.registry import venue_spec

ENV_PREFIX = "BASTION_"
DEFAULT_SECRETS_FILE = "~/.bastion/secrets.yaml"


class SecretsError(ValueError):
    """The secrets could not be loaded safely; the message says what to fix."""


class MissingCredentials(SecretsError):
    pass


def _inside_git_tree(path: Path) -> Path | None:
    for parent in path.resolve().parents:
        if (parent / ".git").exists():
            return parent
    return None


@dataclass
class Secrets:
    """Loaded credentials per venue (lower-case names) and alert channel URLs."""

    venues: dict[str, dict[str, str]] = field(default_factory=dict)
    alert_urls: list[str] = field(default_factory=list)
    source: str = "none"

    def credentials(self, venue: str) -> dict[str, str]:
        """The venue's credentials by lower-case name (``api_key``); raises naming what is missing."""
        spec = venue_spec(venue)
        have = self.venues.get(spec.name, {})
        missing = [n for n in spec.credentials if not have.get(n.lower())]
        if missing:
            names = ", ".join(f"{ENV_PREFIX}{spec.name.upper()}_{n}" for n in missing)
            raise MissingCredentials(
                f"no credentials for {spec.name}: set {names} in the environment, or "
                f"{spec.name}: {{{', '.join(n.lower() + ': ...' for n in missing)}}} in the secrets file "
                f"({DEFAULT_SECRETS_FILE}, mode 0600, outside any git repository)"
            )
        return {n.lower(): have[n.lower()] for n in spec.credentials}


def _read_file(path: Path) -> dict[str, Any]:
    repo = _inside_git_tree(path)
    if repo is not None:
        raise SecretsError(f"secrets file {path} is inside the git working tree {repo}: move it out")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretsError(f"secrets file {path} is readable by others (mode {mode:o}): chmod 600 {path}")
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict):
        raise SecretsError(f"secrets file {path}: expected a mapping at the top level")
    return doc


def load_secrets(environ: dict[str, str] | None = None, path: Path | None = None) -> Secrets:
    """Environment over file; every value is registered for redaction as it is read."""
    env = dict(os.environ if environ is None else environ)
    out = Secrets()
    sources: list[str] = []
    file = path or Path(env.get("BASTION_SECRETS_FILE", DEFAULT_SECRETS_FILE)).expanduser()
    if file.is_file():
        doc = _read_file(file)
        sources.append(str(file))
        for key, value in doc.items():
            if key == "alerts":
                urls = (value or {}).get("urls", []) if isinstance(value, dict) else []
                out.alert_urls.extend(str(u) for u in urls)
                continue
            if not isinstance(value, dict):
                raise SecretsError(f"secrets file {file}: {key!r} must be a mapping of names to values")
            name = venue_spec(str(key)).name
            out.venues[name] = {str(k).lower(): str(v) for k, v in value.items() if v is not None}
    elif path is not None:
        raise SecretsError(f"secrets file not found: {path}")
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or not value:
            continue
        rest = key[len(ENV_PREFIX) :]
        if rest == "ALERT_URLS":
            out.alert_urls.extend(u for u in value.replace(",", " ").split() if u)
            sources.append("environment")
            continue
        venue, _, name = rest.partition("_")
        try:
            spec = venue_spec(venue)
        except KeyError:
            continue
        if name in spec.credentials:
            out.venues.setdefault(spec.name, {})[name.lower()] = value
            sources.append("environment")
    for creds in out.venues.values():
        for v in creds.values():
            register_secret(v)
    for u in out.alert_urls:
        register_secret(u)
    out.source = ", ".join(dict.fromkeys(sources)) or "none"
    return out
