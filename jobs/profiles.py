"""Resolve a buffer's profile reference to a Memory profile id.

A member names its profile directly (``id:mem_profile_…``) or by the customer's
phone (``phone:+1…``). Phones go through the Profiles Lookup endpoint once and
are then cached in Redis for BRIDGE_PROFILE_CACHE_TTL_S.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from redis import Redis

from app.buffer import text
from app.routing import parse_member
from jobs.memory import MemoryApi, Reply


@dataclass(frozen=True)
class Resolution:
    """A profile id, or why there is none: ``missing`` or a failed Reply."""

    profile: str = ""
    missing: bool = False
    failure: Reply | None = None


class Profiles:
    """Profile ids by member, from the member itself, the cache, or a Lookup."""

    def __init__(
        self,
        redis: Redis,
        api: MemoryApi,
        prefix: str,
        ttl_s: int,
        create: bool = False,
    ) -> None:
        self.redis = redis
        self.api = api
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.create = create  # BRIDGE_UNKNOWN_PROFILE=create: make missing profiles

    def resolve(
        self, members: Iterable[str], run: Callable[..., Iterable[Resolution]]
    ) -> dict[str, Resolution]:
        """Resolve every member; ``run(fn, items)`` runs the Lookups concurrently."""
        found: dict[str, Resolution] = {}
        phones: list[str] = []
        for member in members:
            _, kind, value = parse_member(member)
            if kind == "id":
                found[member] = Resolution(value)
            else:
                phones.append(member)
        if not phones:
            return found

        cached = self.redis.mget([self._key(m) for m in phones])
        misses = [m for m, hit in zip(phones, cached, strict=True) if not hit]
        for member, hit in zip(phones, cached, strict=True):
            if hit:
                found[member] = Resolution(text(hit))
        looked_up = dict(zip(misses, run(self._lookup, misses), strict=True))
        found.update(looked_up)
        self._remember({m: r.profile for m, r in looked_up.items() if r.profile})

        return found

    def forget(self, member: str) -> None:
        """Drop a cached profile id, so that the next batch looks it up again."""
        self.redis.delete(self._key(member))

    def again(self, member: str) -> Resolution:
        """Forget the cached id and look the phone up once more (after a 404)."""
        self.forget(member)
        resolution = self._lookup(member)
        if resolution.profile:
            self._remember({member: resolution.profile})

        return resolution

    def _lookup(self, member: str) -> Resolution:
        store, _, phone = parse_member(member)
        reply, profiles = self.api.lookup_phone(store, phone)
        if reply.status != 200:
            return Resolution(failure=reply)
        if profiles:
            return Resolution(profiles[0])
        if not self.create:
            return Resolution(missing=True)
        reply, created = self.api.create_profile(store, phone)

        return Resolution(created) if created else Resolution(failure=reply)

    def _remember(self, profiles: dict[str, str]) -> None:
        if profiles:
            pipe = self.redis.pipeline(transaction=False)
            for member, profile in profiles.items():
                pipe.set(self._key(member), profile, ex=self.ttl_s)
            pipe.execute()

    def _key(self, member: str) -> str:
        return f"{self.prefix}:profile:{member}"
