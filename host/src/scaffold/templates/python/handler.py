"""The logic of the Levee function `{{name}}`, kept apart from the component bindings so
`python3 -m unittest` tests it natively (app.py connects it to the host).

Body: a JSON object with an `org` (a non-empty string). It counts messages per org at
`seen/{org}` (read-modify-write: safe, since every invocation is a transaction) and writes
`greeting/{message id}` = "{greeting} {org}", the greeting coming from the function's config
(`[functions.{{name}}.config] greeting = "..."`, default "hello").
"""

import json


class Permanent(Exception):
    """Never succeeds: the message goes to the dead-letter queue with this reason."""


class Retryable(Exception):
    """Try again later: the message is redelivered after a backoff."""


def handle(msg_id, body, kv, config):
    """Handles one message.

    `kv` has `get(key) -> bytes | None` and `put(key, value: bytes)`; `config(key)` returns
    the manifest's config value (or secret) named `key`, or None.
    """
    try:
        event = json.loads(body)
    except ValueError as e:
        raise Permanent(f"body is not JSON: {e}") from None
    org = event.get("org") if isinstance(event, dict) else None
    if not isinstance(org, str) or not org or "/" in org:
        raise Permanent(f'field "org": expected a non-empty string without \'/\', got {org!r}')
    key = f"seen/{org}"
    before = kv.get(key)
    count = int(before) if before is not None else 0
    kv.put(key, str(count + 1).encode())
    greeting = config("greeting") or "hello"
    kv.put(f"greeting/{msg_id}", f"{greeting} {org}".encode())
