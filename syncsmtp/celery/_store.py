"""Where workers record what they are sending, so that a redelivered task sends nothing twice.

For each idempotency key the store holds one small JSON record:
``{"state": "sending", ...}`` from just before the message's content may
leave, ``{"state": "sent", ...}`` once the server accepted it, and
``{"state": "maybe_delivered", ...}`` when the send failed after the content
was written and before the server answered. A key whose send failed for sure
(refused, or lost before any content left) is deleted, so that a retry can
send it. Records expire after ``ttl`` seconds.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .. import _messages

__all__ = ["DeliveryStore", "RedisStore"]

#: How long a record is kept by default: a week, longer than any retry.
DEFAULT_TTL = 7 * 24 * 3600


class DeliveryStore(abc.ABC):
    """The interface of a delivery store: a shared map from idempotency key
    to record, with an atomic claim. Workers on every host must share one.
    Subclass it to keep the records elsewhere than in Redis."""

    @abc.abstractmethod
    def claim(self, keys: Sequence[str], record: Mapping[str, Any]) -> list[dict[str, Any] | None]:
        """For each key, atomically: store ``record`` when the key has none
        and answer None (the caller may send), else leave it and answer the
        record already there."""

    @abc.abstractmethod
    def put(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        """Store each record under its key, replacing what was there."""

    @abc.abstractmethod
    def release(self, keys: Sequence[str]) -> None:
        """Forget the keys: a later claim succeeds."""


# Each key claimed atomically (SET NX GET EX: Redis 7.0 or later); "" for a key claimed now.
_CLAIM = """
local found = {}
for i, key in ipairs(KEYS) do
  found[i] = redis.call('SET', key, ARGV[1], 'NX', 'GET', 'EX', ARGV[2]) or ''
end
return found
"""
_PUT = """
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
"""


class RedisStore(DeliveryStore):
    """A :class:`DeliveryStore` in one Redis server (7.0 or later; not a
    Redis Cluster). A claim is ``SET key value NX GET EX ttl`` for each key;
    the keys of one call go in one server-side script, so one round trip.

    ``client`` is a ``redis.Redis`` or a ``redis://`` / ``rediss://`` URL
    (for instance the Celery result backend's). Keys are ``prefix`` followed
    by the idempotency key; records expire after ``ttl`` seconds.
    """

    def __init__(self, client: Any, *, prefix: str = "syncsmtp:delivery:", ttl: int = DEFAULT_TTL) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise ValueError(_messages.seconds("RedisStore", "ttl", ttl))
        self._url: str | None = client if isinstance(client, str) else None
        self._client: Any = None if isinstance(client, str) else client
        self._scripts: dict[str, Any] = {}
        self.prefix = prefix
        self.ttl = ttl

    @property
    def client(self) -> Any:
        """The ``redis.Redis`` client, made from the URL on first use."""
        if self._client is None:
            import redis

            assert self._url is not None
            self._client = redis.Redis.from_url(self._url)
        return self._client

    def _script(self, name: str, source: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.client.register_script(source)
        return script

    def claim(self, keys: Sequence[str], record: Mapping[str, Any]) -> list[dict[str, Any] | None]:
        """See :meth:`DeliveryStore.claim`."""
        if not keys:
            return []
        found = self._script("claim", _CLAIM)(keys=[self.prefix + key for key in keys],
                                              args=[json.dumps(record), self.ttl])
        return [None if old in (b"", "") else _load(old) for old in found]

    def put(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        """See :meth:`DeliveryStore.put`."""
        if records:
            self._script("put", _PUT)(keys=[self.prefix + key for key in records],
                                      args=[self.ttl, *(json.dumps(record) for record in records.values())])

    def release(self, keys: Sequence[str]) -> None:
        """See :meth:`DeliveryStore.release`."""
        if keys:
            self.client.delete(*(self.prefix + key for key in keys))

    def get(self, key: str) -> dict[str, Any] | None:
        """The record of one key, or None (for inspection and tests)."""
        value = self.client.get(self.prefix + key)
        return None if value is None else _load(value)

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r}, ttl={self.ttl})"


def _load(value: bytes | str) -> dict[str, Any]:
    try:
        record = json.loads(value)
    except ValueError:
        record = None
    # Something else wrote the key: treat it as a send whose outcome is unknown.
    return record if isinstance(record, dict) else {"state": "sending", "unreadable": True}
