"""Users whose shard is on each worker, for the tests that need users on both (tests/citus)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

PLACEMENT_SQL: Final = (
    "SELECT nodeport FROM citus_shards "
    "WHERE table_name = 'accounts'::regclass AND shardid = get_shard_id_for_distribution_column('accounts', $1::text)"
)
PICKS_MAX: Final = 10_000


async def users_on_each_worker(
    db: Any, ports: Sequence[int], count: int, new_user_id: Callable[[], str]
) -> dict[int, list[str]]:
    """`count` user ids from new_user_id whose shard is on each worker, by the worker's port.

    db: an asyncpg connection or pool on the coordinator."""
    found: dict[int, list[str]] = {port: [] for port in ports}
    for _ in range(PICKS_MAX):
        user_id = new_user_id()
        port = await db.fetchval(PLACEMENT_SQL, user_id)
        if len(found[port]) < count:
            found[port].append(user_id)
        if all(len(users) == count for users in found.values()):
            return found
    raise AssertionError(f"{PICKS_MAX} user ids did not fill {count} per worker: {found}")
