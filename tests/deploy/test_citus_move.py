"""docs/citus-deploy.md: the move of a single-node database onto Citus, run as written, and its compose commands.

Everywhere: the page has the blocks the move runs, its anchors resolve, and every `docker compose` line names
services of docker-compose.yml (with `--profile citus` when one belongs to that profile), their user and database.

Where Citus is installed (scripts/citus.py finds citus.so; elsewhere these tests skip in one line): a cluster of
their own (a coordinator and two workers on free loopback ports, in a fresh folder under /tmp), and a single-node
database on the coordinator's server without the citus extension, migrated (`alembic upgrade head`: migration 0012
is then a no-op) and given rows through the ledger. Then the page's blocks nodes, dump, restore and verify run in
bash as they are written, with COORDINATOR, WORKERS, SOURCE_URL and TARGET_URL set. After them: every ledger table
is distributed (by user_id, colocated; processed_events a reference table), every row is the same, no row stayed
on the coordinator's disk, the ledger answers the same balances, and it writes on the cluster, the ids going on.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml
from alembic import command
from google.protobuf import timestamp_pb2
from psycopg import sql

from credits.ledger.v1 import ledger_service_pb2 as pb
from scripts import citus
from services.ledger import app
from services.ledger.client import LedgerClient
from tests.conftest import ALL_ROLES_TOKEN, alembic_config, ledger_settings, new_key
from tests.deploy.test_operations_doc import slug
from tests.ledger.payment_helpers import Ids, details, source

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "citus-deploy.md"
COMPOSE_PATH = ROOT / "docker-compose.yml"
CITUS_PROFILE = "citus"
BLOCK = re.compile(r"<!-- move:(\w+) -->\n```sh\n(.*?)```", re.DOTALL)
CODE_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)
MOVE_BLOCKS = ("nodes", "dump", "restore", "verify")
LEDGER_TABLES = frozenset(
    {
        "accounts",
        "credit_transactions",
        "transaction_metadata",
        "admin_actions",
        "payments",
        "payment_refunds",
        "holds",
        "hold_events",
        "credit_grants",
        "grant_movements",
        "hold_grants",
        "processed_events",
    }
)
REFERENCE_TABLES = frozenset({"processed_events"})
DISTRIBUTION_COLUMN = "user_id"
TARGET_DATABASE = "credits"  # the name the page's blocks use
SOURCE_DATABASE = "credits_single"
USERS = 4
CREDIT_AMOUNT = 1000
REFUND_MINOR = 500
BLOCK_SECONDS_MAX = 120
PORT_FIRST, PORT_LAST = 20_000, 60_000
PORT_TRIES_MAX = 50
PSQL_EXIT_SCRIPT_ERROR = 3


# --- the page ------------------------------------------------------------------------------------


def page() -> str:
    return DOC.read_text(encoding="utf-8")


def blocks() -> dict[str, str]:
    found: dict[str, str] = {}
    for name, body in BLOCK.findall(page()):
        assert name not in found, f"block {name} twice"
        found[name] = body
    return found


def test_the_page_has_the_blocks_the_move_runs() -> None:
    assert tuple(blocks()) == MOVE_BLOCKS, "the move's blocks, in the order they run"


def test_the_pages_anchors_resolve() -> None:
    headings = {slug(heading) for heading in re.findall(r"^#{1,6} (.+)$", page(), flags=re.MULTILINE)}
    targets = set(re.findall(r"\]\(#([\w-]+)\)", page()))
    assert targets and targets <= headings, f"missing: {sorted(targets - headings)}"


def compose_services() -> dict[str, Any]:
    services = yaml.safe_load(COMPOSE_PATH.read_text(encoding="utf-8"))["services"]
    assert isinstance(services, dict)
    return services


def shell_lines() -> list[str]:
    """Every command line of the page's sh blocks, continuation lines joined."""
    lines: list[str] = []
    for body in CODE_BLOCK.findall(page()):
        lines += body.replace("\\\n", " ").splitlines()
    return lines


def compose_commands() -> list[tuple[list[str], str, list[str], list[str]]]:
    """(profiles, subcommand, services named, the rest) of each `docker compose` line of the page."""
    found = []
    for line in shell_lines():
        if not line.startswith("docker compose "):
            continue
        words = shlex.split(line, comments=True)
        rest = words[2:]
        profiles = []
        while rest[0].startswith("-"):
            assert rest.pop(0) == "--profile", f"an option this test does not know: {line}"
            profiles.append(rest.pop(0))
        subcommand, arguments = rest[0], rest[1:]
        names = [word for word in arguments if not word.startswith("-")]
        if subcommand == "exec":  # exec SERVICE COMMAND...
            names, arguments = names[:1], arguments[arguments.index(names[0]) + 1 :]
        found.append((profiles, subcommand, names, arguments))
    return found


def test_the_pages_compose_commands_name_real_services() -> None:
    services = compose_services()
    commands = compose_commands()
    assert len(commands) >= 8, "the page's compose commands were not found"
    for profiles, subcommand, names, _ in commands:
        assert subcommand in {"up", "ps", "stop", "exec", "logs", "down"}, subcommand
        for name in names:
            assert name in services, f"docker compose {subcommand} {name}: no such service"
            if CITUS_PROFILE in services[name].get("profiles", []):
                assert CITUS_PROFILE in profiles, f"docker compose {subcommand} {name}: without --profile citus"
    assert (["citus"], "up", [], ["-d", "--build"]) in commands, "the page starts the profile"


def test_the_pages_psql_and_urls_use_the_nodes_user_and_database() -> None:
    services = compose_services()
    for _, subcommand, names, arguments in compose_commands():
        if subcommand == "exec" and arguments[:1] == ["psql"]:
            environment = services[names[0]]["environment"]
            assert arguments[arguments.index("-U") + 1] == environment["POSTGRES_USER"]
            assert arguments[arguments.index("-d") + 1] == environment["POSTGRES_DB"]
    exported: dict[str, str] = {}  # the first export of each name: step 3's, in the coordinator's container
    for line in shell_lines():
        if line.startswith("export "):
            for word in shlex.split(line)[1:]:
                name, _, value = word.partition("=")
                exported.setdefault(name, value)
    urls = {name: exported[name] for name in ("SOURCE_URL", "TARGET_URL")}
    assert urlsplit(urls["TARGET_URL"]).hostname == "citus-coordinator"
    assert urlsplit(urls["SOURCE_URL"]).hostname == "postgres"
    for url in urls.values():
        parts = urlsplit(url)
        environment = services[parts.hostname or ""]["environment"]
        assert (parts.username, parts.password, parts.port) == (environment["POSTGRES_USER"], None, 5432)
        assert parts.path == "/" + environment["POSTGRES_DB"] == "/" + TARGET_DATABASE
    assert "LEDGER_DATABASE_HOST=citus-coordinator" in shell_lines()


# --- a cluster of our own ------------------------------------------------------------------------


def free_ports(count: int) -> int:
    """The first of `count` consecutive loopback ports that nothing listens on now."""
    for _ in range(PORT_TRIES_MAX):
        first = random.randint(PORT_FIRST, PORT_LAST - count)
        try:
            for port in range(first, first + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {count} free consecutive ports in {PORT_TRIES_MAX} tries")


@pytest.fixture(scope="module")
def cluster() -> Iterator[citus.Cluster]:
    try:
        citus.installed()
    except citus.NotInstalled as exc:
        pytest.skip(f"no Citus cluster for the move: {exc}")
    folder = Path(tempfile.mkdtemp(prefix="credits-citus-move-", dir="/tmp"))
    nodes = citus.Cluster(folder, free_ports(1 + citus.WORKERS))
    try:
        nodes.start()
        yield nodes
    finally:
        stop_now(nodes)
        shutil.rmtree(folder, ignore_errors=True)


def stop_now(cluster: citus.Cluster) -> None:
    """pg_ctl's immediate shutdown (no checkpoint: the folder is deleted next), as the user that runs the nodes."""
    bindir = citus.installed()
    runner = ["runuser", "-u", cluster.system_user, "--"] if cluster.system_user is not None else []
    for node in cluster.nodes:
        if cluster.running(node):
            stop = [str(bindir / "pg_ctl"), "-D", str(node.data), "-m", "immediate", "-w", "stop"]
            subprocess.run([*runner, *stop], capture_output=True, timeout=BLOCK_SECONDS_MAX, check=True, cwd="/")


def block_environment(cluster: citus.Cluster, **values: str) -> dict[str, str]:
    """This process's environment without libpq's variables, the cluster's PostgreSQL tools first on the PATH."""
    bindir = citus.installed()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["PGUSER"] = citus.SUPERUSER
    env["PGCONNECT_TIMEOUT"] = "10"
    env["COORDINATOR"] = f"{citus.HOST}:{cluster.coordinator.port}"
    env["WORKERS"] = ",".join(f"{citus.HOST}:{worker.port}" for worker in cluster.workers)
    return {**env, **values}


def run_block(name: str, env: Mapping[str, str], cwd: Path) -> str:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", blocks()[name]],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=BLOCK_SECONDS_MAX,
        check=False,
    )
    assert result.returncode == 0, f"block {name} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


# --- the single-node database and what it holds --------------------------------------------------


@pytest.fixture(scope="module")
def single_node_url(cluster: citus.Cluster) -> str:
    """A database of the coordinator's server without the citus extension: one PostgreSQL, as before the move."""
    with psycopg.connect(cluster.coordinator.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SOURCE_DATABASE)))
    url = cluster.coordinator.url(SOURCE_DATABASE)
    command.upgrade(alembic_config(url), "head")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'citus'").fetchone() is None
        assert conn.execute("SELECT ledger_distribute()").fetchone() == (0,), "a no-op without citus"
    return url


@pytest.fixture
async def ledger_on() -> AsyncIterator[Any]:
    """Starts a ledger on a database URL; each is stopped at the end."""
    servers: list[app.LedgerServer] = []

    async def start(url: str) -> LedgerClient:
        server = await app.start(ledger_settings(url))
        servers.append(server)
        return LedgerClient(f"127.0.0.1:{server.port}", ALL_ROLES_TOKEN)

    yield start
    for server in servers:
        await server.stop(grace_seconds=1.0)


def refund_of(amount_minor: int) -> pb.PaymentRefund:
    return pb.PaymentRefund(
        refund_id=f"re_{uuid.uuid4().hex}", amount_minor=amount_minor, status=pb.REFUND_STATUS_SUCCEEDED
    )


async def give_rows(ledger: LedgerClient) -> dict[str, Ids]:
    """Users with a row in every table: grants with metadata, a debit, an adjustment, a captured and an open hold,
    a paid checkout refunded in part by refund id (its events recorded). Each user's checkout ids."""
    users = {f"user-{uuid.uuid4().hex}": Ids.new() for _ in range(USERS)}
    expire = timestamp_pb2.Timestamp()
    expire.FromDatetime(datetime.now(UTC) + timedelta(days=30))
    for user, ids in users.items():
        await ledger.credit(
            user, CREDIT_AMOUNT, new_key(), "welcome", metadata={"campaign": "spring"}, expire_time=expire
        )
        await ledger.credit(user, CREDIT_AMOUNT, new_key(), "bonus", priority=10)
        await ledger.debit(user, 120, new_key(), "spend")
        await ledger.admin_adjust(user, 50, new_key(), "ops@example.test", "goodwill")
        hold = await ledger.reserve_credits(user, 200, new_key(), "job", 600)
        await ledger.capture_hold(user, hold.hold.id, new_key(), 150)
        await ledger.reserve_credits(user, 30, new_key(), "open job", 3600)
        await ledger.open_payment(details(user, session=ids.session))
        await ledger.settle_payment(details(user, session=ids.session, intent=ids.intent, charge=ids.charge), source())
        refunded = details(user, intent=ids.intent, priced=False)
        await ledger.apply_refund(refunded, 0, source("charge.refunded"), [refund_of(REFUND_MINOR)])
    return users


def table_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the public schema, in one order."""
    with psycopg.connect(url) as conn:
        names = conn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name"
        ).fetchall()
        return {
            name: sorted(conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(name))).fetchall(), key=repr)
            for (name,) in names
        }


def distribution(url: str) -> dict[str, tuple[str, str | None, int]]:
    """Each Citus table: (its method, its distribution column, its colocation group)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT logicalrelid::regclass::text, partmethod, column_to_column_name(logicalrelid, partkey),"
            " colocationid FROM pg_dist_partition"
        ).fetchall()
    return {name: (method, column, colocation) for name, method, column, colocation in rows}


def local_bytes(url: str) -> int:
    """Bytes of the coordinator's own copies of the Citus tables (their rows live in the shards)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT sum(pg_relation_size(logicalrelid)) FROM pg_dist_partition").fetchone()
    assert row is not None
    return int(row[0])


# --- the move ------------------------------------------------------------------------------------


async def test_the_documented_move_distributes_every_table_and_keeps_every_row(
    cluster: citus.Cluster, single_node_url: str, ledger_on: Any, tmp_path: Path
) -> None:
    single = await ledger_on(single_node_url)
    users = await give_rows(single)
    balances = {user: await single.get_balance(user) for user in users}
    await single.close()
    before = table_rows(single_node_url)
    assert all(before[table] for table in LEDGER_TABLES), "a row in every table, or the move proves less"
    target_url = cluster.coordinator.url(TARGET_DATABASE)
    env = block_environment(cluster, SOURCE_URL=single_node_url, TARGET_URL=target_url)

    run_block("nodes", env, ROOT)
    run_block("dump", env, tmp_path)
    run_block("restore", env, tmp_path)
    report = run_block("verify", env, tmp_path)

    verified = (tmp_path / "source.txt").read_text(encoding="utf-8")
    assert verified == (tmp_path / "target.txt").read_text(encoding="utf-8")
    assert len(verified.splitlines()) == len(before) + 1, "a count per table, then the balances"
    assert all(f"{table}|{len(rows)}" in verified.splitlines() for table, rows in before.items())
    assert all(table in report for table in LEDGER_TABLES), "citus_tables lists them"

    placed = distribution(target_url)
    assert set(placed) == LEDGER_TABLES, "alembic_version stays a plain table"
    assert {placed[table][0] for table in REFERENCE_TABLES} == {"n"}
    distributed = {placed[table] for table in LEDGER_TABLES - REFERENCE_TABLES}
    assert len(distributed) == 1, f"one colocation, hash on user_id: {distributed}"
    assert distributed.pop()[:2] == ("h", DISTRIBUTION_COLUMN)
    assert table_rows(target_url) == before
    assert local_bytes(target_url) == 0, "every row went to the shards, none stayed on the coordinator"

    moved = await ledger_on(target_url)
    for user in users:
        assert await moved.get_balance(user) == balances[user]
    user, ids = next(iter(users.items()))
    last_id = max(row[0] for row in before["credit_transactions"])
    credited = await moved.credit(user, CREDIT_AMOUNT, new_key(), "after the move")
    assert credited.transaction.id == last_id + 1, "the restored identity sequence goes on"
    refunded = details(user, intent=ids.intent, priced=False)
    second = await moved.apply_refund(refunded, 0, source("charge.refunded"), [refund_of(REFUND_MINOR)])
    assert second.payment.amount_refunded_minor == 2 * REFUND_MINOR, "a payment moved over takes its next refund"
    assert second.credits_clawed_back > 0
    await moved.close()


def test_join_refuses_a_worker_that_does_not_answer(cluster: citus.Cluster, tmp_path: Path) -> None:
    name = f"credits_join_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.coordinator.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(cluster.coordinator.url(name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION citus")
        env = block_environment(cluster)
        nowhere = f"{citus.HOST}:{free_ports(1)}"
        result = subprocess.run(
            [
                "psql",
                "-X",
                f"--set=coordinator={env['COORDINATOR']}",
                f"--set=workers={nowhere}",
                f"--file={ROOT / 'deploy' / 'citus' / 'join.sql'}",
                f"--dbname={cluster.coordinator.url(name)}",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=BLOCK_SECONDS_MAX,
            check=False,
        )
        assert result.returncode == PSQL_EXIT_SCRIPT_ERROR, result.stdout + result.stderr
        assert f"connection to the remote node {citus.SUPERUSER}@{nowhere} failed" in result.stderr
        with psycopg.connect(cluster.coordinator.url(name)) as conn:
            assert conn.execute("SELECT count(*) FROM pg_dist_node WHERE groupid <> 0").fetchone() == (0,)
    finally:
        with psycopg.connect(cluster.coordinator.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
