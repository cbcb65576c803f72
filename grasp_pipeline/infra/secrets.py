"""Credentials never leave the environment: URIs are shown and stored with their secrets redacted.

A URI such as `http://user:password@host:5000` or `redis://:password@host/0` (or one with
`?password=…`, `sig=…`-style query secrets) is rewritten to `http://user:***@host:5000`
wherever the pipeline shows or stores it: Dagster metadata and run config, lineage in Delta
commits, MLflow params and tags, log lines and CLI messages. The credentials themselves
travel in environment variables (`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`
for MLflow, `GRASP_CELERY_BROKER` for the broker), which nothing records.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"
# scheme://[user[:password]@]host…: the password part (or a bare token before '@')
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*)(?::(?P<password>[^@/\s]*))?@")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd|secret|token|access_token|api_key|apikey|key|sig|"
                           r"signature|x-amz-signature|x-amz-credential|x-amz-security-token)=)[^&\s#]+")


def redact(text: str) -> str:
    """Returns `text` with every URI password (or userinfo token) and query secret replaced by ***."""
    def userinfo(match: re.Match) -> str:
        if match.group("password") is None:  # scheme://token@host: the token is the secret
            return f"{match.group('scheme')}{REDACTED}@" if match.group("user") else match.group(0)
        return f"{match.group('scheme')}{match.group('user')}:{REDACTED}@"

    return _QUERY_SECRET.sub(rf"\g<1>{REDACTED}", _USERINFO.sub(userinfo, text))


def redact_values(values):
    """Returns `values` (nested dicts, lists, strings) with every string redacted."""
    if isinstance(values, str):
        return redact(values)
    if isinstance(values, dict):
        return {k: redact_values(v) for k, v in values.items()}
    if isinstance(values, (list, tuple)):
        return type(values)(redact_values(v) for v in values)
    return values


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """Returns (the URI without user and password, user, password); (uri, None, None) without them."""
    parts = urlsplit(uri)
    if not parts.username and not parts.password:
        return uri, None, None
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), parts.username, parts.password


def has_credentials(uri: str) -> bool:
    return redact(uri) != uri
