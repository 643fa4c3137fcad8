"""Migrations and generated code, through the same commands operators and CI run:
`alembic upgrade head` / `alembic downgrade base` with DATABASE_URL on a fresh empty database,
and `scripts/gen_protos.py --check`."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from tests.conftest import ROOT, alembic_config

ALEMBIC = str(ROOT / ".venv" / "bin" / "alembic")
SUBPROCESS_SECONDS_MAX = 120
LEDGER_TABLES = {
    "accounts",
    "credit_transactions",
    "transaction_metadata",
    "admin_actions",
    "payments",
    "processed_events",
    "holds",
    "hold_events",
}
LEDGER_FUNCTIONS = {
    "ledger_post",
    "ledger_anonymize",
    "refuse_change_to_append_only_table",
    "ledger_now",
    "ledger_hold_reserve",
    "ledger_hold_capture",
    "ledger_hold_release",
    "ledger_expire_holds",
}
HOLDS_REVISION = "0003_holds"
PAYMENTS_REVISION = "0002_payment_lifecycle"


async def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=SUBPROCESS_SECONDS_MAX)
    return process.returncode or 0, output.decode(errors="replace")


async def alembic(database_url: str, *argv: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    code, output = await run(ALEMBIC, *argv, env=env)
    assert code == 0, output


async def schema_of(database_url: str) -> dict[str, set[str]]:
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        functions = await conn.fetch(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
        )
        # Types of their own (enums, domains, composites), not the row types every table has.
        types = await conn.fetch(
            "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
            " WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c', 'r', 'm')"
            " AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid AND c.relkind <> 'c')"
            " AND t.typelem = 0"
        )
        sequences = await conn.fetch("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")
        triggers = await conn.fetch("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        versions = await conn.fetch("SELECT version_num FROM alembic_version")
    finally:
        await conn.close()
    return {
        "tables": {row[0] for row in tables},
        "functions": {row[0] for row in functions},
        "types": {row[0] for row in types},
        "sequences": {row[0] for row in sequences},
        "triggers": {row[0] for row in triggers},
        "versions": {row[0] for row in versions},
    }


@pytest.mark.not_on_citus("downgrades below 0012 on Citus end in a distributed deadlock (docs/citus.md)")
async def test_upgrade_downgrade_upgrade_on_an_empty_database(databases):
    database_url = databases.create(migrate=False)
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()

    await alembic(database_url, "upgrade", "head")
    upgraded = await schema_of(database_url)
    assert upgraded["tables"] >= LEDGER_TABLES
    assert upgraded["functions"] >= LEDGER_FUNCTIONS
    assert {"payment_status", "hold_result"} <= upgraded["types"]
    assert {"credit_transactions_append_only", "credit_transactions_no_truncate"} <= upgraded["triggers"]
    assert {"admin_actions_append_only", "admin_actions_no_truncate"} <= upgraded["triggers"]
    assert {"hold_events_append_only", "hold_events_no_truncate", "holds_no_delete"} <= upgraded["triggers"]
    assert upgraded["versions"] == {head}

    await alembic(database_url, "downgrade", "base")
    downgraded = await schema_of(database_url)
    assert downgraded == {
        "tables": {"alembic_version"},
        "functions": set(),
        "types": set(),
        "sequences": set(),
        "triggers": set(),
        "versions": set(),
    }

    await alembic(database_url, "upgrade", "head")
    assert await schema_of(database_url) == upgraded


async def ledger_post_definition(database_url: str) -> tuple[str, list[str]]:
    """ledger_post's full definition and the columns of accounts, as the database has them."""
    conn = await asyncpg.connect(database_url)
    try:
        definition = await conn.fetchval("SELECT pg_get_functiondef('ledger_post'::regproc)")
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'accounts' ORDER BY ordinal_position"
        )
    finally:
        await conn.close()
    return definition, [row[0] for row in columns]


async def test_holds_downgrade_restores_the_payment_revision_exactly(databases):
    reference_url = databases.create(migrate=False)
    await alembic(reference_url, "upgrade", PAYMENTS_REVISION)
    database_url = databases.create(migrate=False)
    await alembic(database_url, "upgrade", HOLDS_REVISION)
    assert await ledger_post_definition(database_url) != await ledger_post_definition(reference_url)

    await alembic(database_url, "downgrade", PAYMENTS_REVISION)

    assert await ledger_post_definition(database_url) == await ledger_post_definition(reference_url)
    assert await schema_of(database_url) == await schema_of(reference_url)
    await alembic(database_url, "upgrade", HOLDS_REVISION)  # and back again


async def test_alembic_without_database_url_names_the_variable():
    env = {name: value for name, value in os.environ.items() if name != "DATABASE_URL"}
    code, output = await run(ALEMBIC, "upgrade", "head", env=env)
    assert code != 0
    assert "DATABASE_URL" in output
    assert "Traceback" not in output


async def test_generated_code_is_current():
    code, output = await run(sys.executable, "scripts/gen_protos.py", "--check")
    assert code == 0, output
