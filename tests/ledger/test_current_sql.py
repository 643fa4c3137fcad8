"""migrations/sql/ is what runs: a database built by `alembic upgrade head` has exactly the functions and the
triggers of those files (pg_get_functiondef / pg_get_triggerdef, byte for byte), no more, no fewer.

A second database, also at head, has all its functions and triggers dropped and the files loaded instead;
both are then read back the same way and compared. The refusals show the check fails when a migration and a
file disagree (a body changed, a function only the database has).
"""

from __future__ import annotations

import asyncpg
import pytest

from scripts.current_sql import SQL_ROOT, defined_names, differences, folder_of
from tests.conftest import DatabaseFactory

EXTRA_FUNCTION_SQL = "CREATE FUNCTION ledger_extra() RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$"
CHANGED_CLOCK_SQL = (
    "CREATE OR REPLACE FUNCTION ledger_now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT clock_timestamp() $$"
)


@pytest.fixture
def two_databases_at_head(databases: DatabaseFactory) -> tuple[str, str]:
    return databases.create(), databases.create()


@pytest.mark.not_on_citus("loads the SQL files into a second database; Citus propagates that DDL to the workers")
async def test_the_migrated_functions_and_triggers_are_exactly_the_files(two_databases_at_head):
    migrated, scratch = two_databases_at_head
    assert await differences(migrated, scratch) == []


def test_each_file_defines_the_function_it_is_named_after_in_its_capabilitys_folder():
    names = defined_names()
    assert "ledger_post" in names and "ledger_payment_settle" in names and "ledger_hold_reserve" in names
    for name, path in names.items():
        assert path.parent == SQL_ROOT / folder_of(name), path


@pytest.mark.not_on_citus("loads the SQL files into a second database; Citus propagates that DDL to the workers")
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(CHANGED_CLOCK_SQL, "function ledger_now: the file differs from the migrated database", id="body"),
        pytest.param(EXTRA_FUNCTION_SQL, "function ledger_extra: in the database, in no file", id="extra-function"),
        pytest.param(
            "DROP TRIGGER holds_no_delete ON holds",
            "trigger holds_no_delete: in a file, not in the migrated database",
            id="missing-trigger",
        ),
    ],
)
async def test_a_database_that_differs_from_the_files_is_reported(two_databases_at_head, change, expected):
    migrated, scratch = two_databases_at_head
    conn = await asyncpg.connect(migrated)
    try:
        await conn.execute(change)
    finally:
        await conn.close()
    assert await differences(migrated, scratch) == [expected]
