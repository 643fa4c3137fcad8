"""The current SQL of the ledger's server-side functions and triggers, one `.sql` file each, in migrations/sql/.

Migrations are frozen history: a function changed three times is defined in three migrations. The files
under migrations/sql/ are what runs today, one definition per function (named after it, in the folder of
its capability) and one file of the triggers; tests/ledger/test_current_sql.py holds a database built by
`alembic upgrade head` to them.

    python scripts/current_sql.py --write DATABASE_URL
        rewrite the files from a database at head
    python scripts/current_sql.py --check SCRATCH_URL DATABASE_URL
        load the files into SCRATCH_URL (a second database at head, changed) and exit 1 when its functions
        and triggers differ from DATABASE_URL's

A migration that changes a function copies its new definition into the migration (history stays frozen)
and rewrites the file with --write; the test fails until both agree.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
SQL_ROOT = ROOT / "migrations" / "sql"
MIGRATIONS = ROOT / "migrations" / "versions"
TRIGGERS_FILE = SQL_ROOT / "triggers.sql"
SCHEMA = "public"
# Which capability's folder a function's file lives in, by the first prefix of its name that matches.
FOLDER_BY_PREFIX = (
    ("ledger_payment_", "payments"),
    ("ledger_event_", "payments"),
    ("payment_", "payments"),
    ("ledger_hold_", "holds"),
    ("ledger_expire_holds", "holds"),
    ("hold_", "holds"),
    ("ledger_post", "accounts"),
    ("grant_", "accounts"),
    ("ledger_expire_grants", "accounts"),
    ("ledger_anonymize", "accounts"),
)
FOLDER_DEFAULT = "common"  # used by every capability: the clock, the append-only guard
FUNCTIONS_SQL = """
SELECT p.proname AS name, pg_get_functiondef(p.oid) AS definition
  FROM pg_proc p
 WHERE p.pronamespace = $1::regnamespace
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
 ORDER BY p.proname
"""
TRIGGERS_SQL = """
SELECT t.tgname AS name, pg_get_triggerdef(t.oid) AS definition
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE c.relnamespace = $1::regnamespace AND NOT t.tgisinternal
 ORDER BY c.relname, t.tgname
"""
DEFINED_NAME = re.compile(r"CREATE OR REPLACE FUNCTION public\.(\w+)\(")


def folder_of(function_name: str) -> str:
    for prefix, folder in FOLDER_BY_PREFIX:
        if function_name.startswith(prefix):
            return folder
    return FOLDER_DEFAULT


def function_files() -> list[Path]:
    return sorted(path for path in SQL_ROOT.rglob("*.sql") if path != TRIGGERS_FILE)


async def functions_of(conn: asyncpg.Connection) -> dict[str, str]:
    """Every function of the schema (none of an extension's): its name → pg_get_functiondef."""
    rows = await conn.fetch(FUNCTIONS_SQL, SCHEMA)
    definitions = {row["name"]: row["definition"] for row in rows}
    assert len(definitions) == len(rows), "one function per name: a file is named after its function"
    return definitions


async def triggers_of(conn: asyncpg.Connection) -> dict[str, str]:
    return {row["name"]: row["definition"] for row in await conn.fetch(TRIGGERS_SQL, SCHEMA)}


async def load_files(conn: asyncpg.Connection) -> None:
    """Replaces every function and trigger of the schema by the files' (a test's scratch database only)."""
    async with conn.transaction():
        for name in await functions_of(conn):
            await conn.execute(f"DROP FUNCTION {SCHEMA}.{name} CASCADE")  # its triggers (and uses) with it
        # Bodies refer to functions defined in later files; they are checked when they run, as in a migration.
        await conn.execute("SET LOCAL check_function_bodies = off")
        for path in function_files():
            await conn.execute(path.read_text())
        await conn.execute(TRIGGERS_FILE.read_text())


def last_migration_defining(name: str) -> str:
    pattern = re.compile(rf"CREATE (OR REPLACE )?FUNCTION {name}\(")
    defining = [path.name for path in sorted(MIGRATIONS.glob("*.py")) if pattern.search(path.read_text())]
    return defining[-1] if defining else "(no migration)"


def function_file_text(name: str, definition: str) -> str:
    return f"-- {name}: current definition (last changed by migrations/versions/{last_migration_defining(name)}).\n" + (
        definition.rstrip() + ";\n"
    )


async def write(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        functions, triggers = await functions_of(conn), await triggers_of(conn)
    finally:
        await conn.close()
    for path in function_files():
        path.unlink()
    for name, definition in functions.items():
        path = SQL_ROOT / folder_of(name) / f"{name}.sql"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(function_file_text(name, definition))
    lines = ["-- The triggers: the append-only guards of the journal, the admin actions and the holds.\n"]
    lines += [f"{definition};\n" for definition in triggers.values()]
    TRIGGERS_FILE.write_text("".join(lines))


def defined_names() -> dict[str, Path]:
    """Each function file's function, by the name its CREATE statement gives."""
    names: dict[str, Path] = {}
    for path in function_files():
        found = DEFINED_NAME.findall(path.read_text())
        assert found == [path.stem], f"{path}: defines {found}, expected exactly {path.stem}"
        names[path.stem] = path
    return names


async def differences(database_url: str, scratch_url: str) -> list[str]:
    """What differs between the database at database_url (at head) and scratch_url (also at head) once its
    functions and triggers are replaced by the files: one line per function or trigger."""
    defined_names()
    conn = await asyncpg.connect(database_url)
    scratch = await asyncpg.connect(scratch_url)
    try:
        expected = (await functions_of(conn), await triggers_of(conn))
        await load_files(scratch)
        actual = (await functions_of(scratch), await triggers_of(scratch))
    finally:
        await conn.close()
        await scratch.close()
    lines = []
    for kind, migrated, from_files in zip(("function", "trigger"), expected, actual, strict=True):
        for name in sorted(migrated.keys() | from_files.keys()):
            if name not in from_files:
                lines.append(f"{kind} {name}: in the database, in no file")
            elif name not in migrated:
                lines.append(f"{kind} {name}: in a file, not in the migrated database")
            elif migrated[name] != from_files[name]:
                lines.append(f"{kind} {name}: the file differs from the migrated database")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite migrations/sql/ from the database")
    mode.add_argument("--check", metavar="SCRATCH_URL", help="compare, loading the files into this scratch database")
    parser.add_argument("database_url")
    arguments = parser.parse_args()
    if arguments.write:
        asyncio.run(write(arguments.database_url))
        return 0
    lines = asyncio.run(differences(arguments.database_url, arguments.check))
    print("\n".join(lines) or "migrations/sql/ is the current SQL")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
