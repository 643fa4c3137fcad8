"""creditsctl post end to end: a real subprocess, the real ledger's PostBatch over gRPC, real PostgreSQL.

The summary and `--json` are checked exactly; totals are checked in the ledger itself (balances and journals),
so "nothing applied twice" is read from the database's side, not from what the command says.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.ledger import app
from services.ledger.client import LedgerClient
from tests.cli.conftest import CLI_TIMEOUT_SECONDS, ROOT, Run, cli_environment, creditsctl
from tests.cli.test_creditsctl import closed_port
from tests.conftest import ALL_ROLES_TOKEN, ROLE_TOKENS, DatabaseFactory, ledger_settings

WATCH_POLLS_MAX = 3_000


def posting(kind: str, user_id: str, amount: int, key: str, reason: str = "test", **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "user_id": user_id, "amount": amount, "idempotency_key": key, "reason": reason, **extra}


def write(path: Path, lines: list[dict[str, Any] | str]) -> str:
    path.write_text("".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in lines))
    return str(path)


async def post(env: dict[str, str], file: str, *options: str, stdin: str = "") -> Run:
    return await creditsctl("post", "--file", file, *options, env=env, stdin=stdin)


async def balance(ledger: LedgerClient, user_id: str) -> int:
    return (await ledger.get_balance(user_id)).balance


async def journal(ledger: LedgerClient, user_id: str) -> list[pb.Transaction]:
    entries: list[pb.Transaction] = []
    token = ""
    while True:
        page = await ledger.list_transactions(user_id, page_size=100, page_token=token)
        entries.extend(page.transactions)
        token = page.next_page_token
        if not token:
            return entries


def new_user() -> str:
    return f"user-{uuid.uuid4().hex}"


# --- a mixed file: the summary, --json, a re-run ---


async def test_a_mixed_file_applies_what_it_can_and_names_every_refused_line(
    operator_env: dict[str, str], ledger: LedgerClient, tmp_path: Path
) -> None:
    alice, bob, gone = new_user(), new_user(), new_user()
    await ledger.credit(gone, 10, f"k-{uuid.uuid4().hex}", "before erasure")
    await ledger.anonymize(gone)
    run_id = uuid.uuid4().hex[:8]
    file = write(
        tmp_path / "mixed.jsonl",
        [
            posting("credit", alice, 100, f"a1-{run_id}", reference="grant-12", metadata={"plan": "pro"}),
            posting("credit", bob, 50, f"b1-{run_id}"),
            "",
            posting("debit", alice, 30, f"a2-{run_id}"),
            posting("debit", bob, 80, f"b2-{run_id}"),  # bob holds 50
            posting("credit", alice, 101, f"a1-{run_id}"),  # line 1's key, another amount
            posting("credit", alice, 100, f"a1-{run_id}", reference="grant-12", metadata={"plan": "pro"}),  # replay
            posting("debit", gone, 1, f"g1-{run_id}"),
        ],
    )
    first = await post(operator_env, file, "--json")
    assert first.code == 1, first
    document = first.json()
    refusals = document.pop("refusals")
    assert document == {
        "file": file,
        "postings": 7,
        "batch_size": 1000,
        "atomic": False,
        "batches": 1,
        "batches_answered": 1,
        "complete": True,
        "applied": 3,
        "replayed": 1,
        "refused": 3,
        "not_applied": 0,
        "refused_by_reason": {"ACCOUNT_ANONYMIZED": 1, "IDEMPOTENCY_KEY_REUSED": 1, "INSUFFICIENT_CREDITS": 1},
        "credited": 150,
        "debited": 30,
        "stopped": None,
    }
    assert [{key: item[key] for key in ("line", "kind", "user_id", "idempotency_key", "outcome", "reason", "field")}
            for item in refusals] == [
        {"line": 5, "kind": "debit", "user_id": bob, "idempotency_key": f"b2-{run_id}", "outcome": "refused",
         "reason": "INSUFFICIENT_CREDITS", "field": None},
        {"line": 6, "kind": "credit", "user_id": alice, "idempotency_key": f"a1-{run_id}", "outcome": "refused",
         "reason": "IDEMPOTENCY_KEY_REUSED", "field": None},
        {"line": 8, "kind": "debit", "user_id": gone, "idempotency_key": f"g1-{run_id}", "outcome": "refused",
         "reason": "ACCOUNT_ANONYMIZED", "field": None},
    ]  # fmt: skip
    assert [item["message"] for item in refusals] == [
        "available balance 50 (balance 50, held 0) is smaller than the amount 80",
        "idempotency_key was already used with different parameters",
        "the account was anonymized: it takes no new credits, debits, holds or payments (refunds and lost disputes "
        "of its earlier purchases still take credits back)",
    ]
    assert first.error_lines[-1] == (
        "creditsctl: post: 3 of 7 postings not applied (listed above); every other one applied or replayed. "
        "Fix those lines and re-run the file: what applied replays."
    )
    assert (await balance(ledger, alice), await balance(ledger, bob), await balance(ledger, gone)) == (70, 50, 10)
    oldest = (await journal(ledger, alice))[-1]
    assert (oldest.delta, oldest.reference, oldest.idempotency_key) == (100, "grant-12", f"a1-{run_id}")

    again = await post(operator_env, file)  # the table this time
    assert again.code == 1, again
    lines = again.stdout.splitlines()
    assert lines[:5] == [
        f"file      {file}",
        "postings  7 in 1 batch (1 answered)",
        "applied   0 (credited 0, debited 0)",
        "replayed  4 (applied before with the same key: nothing changed)",
        "refused   3 (ACCOUNT_ANONYMIZED 1, IDEMPOTENCY_KEY_REUSED 1, INSUFFICIENT_CREDITS 1)",
    ]
    assert lines[5] == ""
    assert lines[6].split() == ["LINE", "KIND", "USER", "KEY", "REASON", "MESSAGE"]
    assert [row.split()[:5] for row in lines[7:]] == [
        ["5", "debit", bob, f"b2-{run_id}", "INSUFFICIENT_CREDITS"],
        ["6", "credit", alice, f"a1-{run_id}", "IDEMPOTENCY_KEY_REUSED"],
        ["8", "debit", gone, f"g1-{run_id}", "ACCOUNT_ANONYMIZED"],
    ]
    progress = [line for line in again.stderr.splitlines() if line.startswith("post ")]
    assert progress and "100%  7 postings" in progress[-1], again.stderr
    assert "applied 0  replayed 4  refused 3" in progress[-1]
    assert (await balance(ledger, alice), await balance(ledger, bob)) == (70, 50), "nothing applied twice"
    assert len(await journal(ledger, alice)) == 2


async def test_a_file_that_applies_in_full_exits_0_and_reads_stdin(
    operator_env: dict[str, str], ledger: LedgerClient
) -> None:
    user_id = new_user()
    lines = [posting("credit", user_id, 5, f"s-{uuid.uuid4().hex}") for _ in range(3)]
    text = "".join(json.dumps(item) + "\n" for item in lines)
    run = await post(operator_env, "-", "--json", stdin=text)
    assert run.code == 0, run
    assert run.json()["file"] == "stdin"
    assert (run.json()["applied"], run.json()["refusals"], run.json()["refused_by_reason"]) == (3, [], {})
    assert [line for line in run.error_lines if not line.startswith("post ")] == [], "no complaint"
    assert await balance(ledger, user_id) == 15


# --- resumable by re-running ---


async def test_a_second_run_applies_only_what_the_first_could_not(
    operator_env: dict[str, str], ledger: LedgerClient, tmp_path: Path
) -> None:
    """The file's second half (debits beyond the balance) applies on the second run, after a top-up."""
    user_id, run_id = new_user(), uuid.uuid4().hex[:8]
    credits = [posting("credit", user_id, 10, f"c{index}-{run_id}") for index in range(5)]  # 50
    debits = [posting("debit", user_id, 20, f"d{index}-{run_id}") for index in range(5)]  # 100
    file = write(tmp_path / "halves.jsonl", [*credits, *debits])
    first = (await post(operator_env, file, "--json", "--batch-size", "3")).json()
    assert (first["batches"], first["applied"], first["refused"]) == (4, 7, 3)  # debits 1-2 fit in 50, 3-5 do not
    assert [item["line"] for item in first["refusals"]] == [8, 9, 10]
    assert await balance(ledger, user_id) == 10

    await ledger.credit(user_id, 60, f"top-up-{run_id}", "top-up")
    second = await post(operator_env, file, "--json", "--batch-size", "3")
    assert second.code == 0, second
    assert (second.json()["applied"], second.json()["replayed"], second.json()["refused"]) == (3, 7, 0)
    assert second.json()["debited"] == 60
    assert await balance(ledger, user_id) == 50 + 60 - 100
    entries = await journal(ledger, user_id)
    assert len(entries) == 11, "10 postings and the top-up, each once"
    assert sum(entry.delta for entry in entries) == await balance(ledger, user_id)

    third = (await post(operator_env, file, "--json")).json()
    assert (third["applied"], third["replayed"]) == (0, 10)


@pytest.fixture
async def own_database(databases: DatabaseFactory) -> str:
    return databases.create()


@pytest.fixture
async def own_ledger(own_database: str) -> AsyncIterator[app.LedgerServer]:
    server = await app.start(ledger_settings(own_database))
    yield server
    await server.stop(grace_seconds=0.5)


async def start_creditsctl(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_a_run_stopped_by_a_ledger_outage_is_finished_by_a_rerun(
    own_ledger: app.LedgerServer, own_database: str, tmp_path: Path
) -> None:
    """The ledger goes away while batches fly; the run stops (exit 3) saying what was answered; a re-run on a
    ledger back up (same database) completes it: every posting once, the balance exact."""
    users = [new_user() for _ in range(5)]
    count, run_id = 3_000, uuid.uuid4().hex[:8]
    file = write(
        tmp_path / "outage.jsonl",
        [posting("credit", users[index % 5], 1 + index % 3, f"o{index}-{run_id}") for index in range(count)],
    )
    expected = {user: sum(1 + i % 3 for i in range(count) if i % 5 == users.index(user)) for user in users}
    env = cli_environment(LEDGER_TARGET=f"127.0.0.1:{own_ledger.port}", LEDGER_TOKEN=ALL_ROLES_TOKEN)
    process = await start_creditsctl(env, "post", "--file", file, "--batch-size", "5", "--json")
    async with LedgerClient(f"127.0.0.1:{own_ledger.port}", ALL_ROLES_TOKEN) as watcher:
        for _ in range(WATCH_POLLS_MAX):  # once some batches are answered, stop the ledger
            if await balance(watcher, users[0]) > 0:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("creditsctl posted nothing in time")
    await own_ledger.stop(grace_seconds=0.0)
    stdout, stderr = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_SECONDS)
    assert process.returncode == 3, stderr.decode()
    first = json.loads(stdout)
    assert first["complete"] is False
    assert 0 < first["batches_answered"] < first["batches"] == count // 5
    stopped = first["stopped"]
    assert stopped["batch"] == first["batches_answered"] + 1
    assert stopped["reason"] == "UNAVAILABLE"
    assert stopped["batch_applied_nothing"] is False
    assert stopped["postings_not_answered"] == count - 5 * first["batches_answered"]
    assert first["applied"] == 5 * first["batches_answered"]
    complaint = stderr.decode().splitlines()[-1]
    assert complaint.startswith(f"creditsctl: post: stopped at batch {stopped['batch']} of {count // 5} ")
    assert "unavailable" in complaint
    assert complaint.endswith("Re-running the same file is safe: what applied answers replayed, nothing applies twice.")

    back = await app.start(ledger_settings(own_database))
    try:
        env = cli_environment(LEDGER_TARGET=f"127.0.0.1:{back.port}", LEDGER_TOKEN=ALL_ROLES_TOKEN)
        second = await post(env, file, "--json")
        assert second.code == 0, second
        # The batch in flight when the ledger stopped may have committed: it replays now.
        assert second.json()["replayed"] >= first["applied"]
        assert second.json()["applied"] + second.json()["replayed"] == count
        async with LedgerClient(f"127.0.0.1:{back.port}", ALL_ROLES_TOKEN) as reader:
            for user in users:
                entries = await journal(reader, user)
                assert len(entries) == count // 5, "each posting once"
                assert await balance(reader, user) == expected[user] == sum(entry.delta for entry in entries)
    finally:
        await back.stop(grace_seconds=0.5)


# --- batches ---


async def test_a_file_of_more_than_1000_lines_goes_in_batches(
    operator_env: dict[str, str], ledger: LedgerClient, tmp_path: Path
) -> None:
    users, run_id = [new_user() for _ in range(3)], uuid.uuid4().hex[:8]
    file = write(tmp_path / "big.jsonl", [posting("credit", users[i % 3], 2, f"big{i}-{run_id}") for i in range(2_500)])
    run = await post(operator_env, file, "--json")
    assert run.code == 0, run
    document = run.json()
    assert (document["batches"], document["batches_answered"], document["applied"]) == (3, 3, 2_500)
    assert document["credited"] == 5_000
    assert [await balance(ledger, user) for user in users] == [1_668, 1_666, 1_666]
    smaller = (await post(operator_env, file, "--json", "--batch-size", "700")).json()
    assert (smaller["batches"], smaller["replayed"], smaller["applied"]) == (4, 2_500, 0)


async def test_large_postings_are_split_below_4_mib(
    operator_env: dict[str, str], ledger: LedgerClient, tmp_path: Path
) -> None:
    user_id, run_id = new_user(), uuid.uuid4().hex[:8]
    metadata = {f"key{i:02d}": "\u00e9" * 500 for i in range(20)}  # about 21 KB a posting
    file = write(
        tmp_path / "wide.jsonl",
        [posting("credit", user_id, 1, f"w{i}-{run_id}", metadata=metadata) for i in range(250)],
    )
    run = await post(operator_env, file, "--json")
    assert run.code == 0, run
    assert (run.json()["batches"], run.json()["applied"]) == (2, 250)
    assert await balance(ledger, user_id) == 250


# --- refused before anything is sent ---


async def test_a_bad_line_stops_the_file_before_anything_is_sent(
    operator_env: dict[str, str], ledger: LedgerClient, tmp_path: Path
) -> None:
    user_id = new_user()
    file = write(
        tmp_path / "bad.jsonl",
        [
            posting("credit", user_id, 10, f"k-{uuid.uuid4().hex}"),
            posting("credit", user_id, 10, f"k-{uuid.uuid4().hex}"),
            posting("credit", user_id, 0, f"k-{uuid.uuid4().hex}"),
            "{oops",
        ],
    )
    run = await post(operator_env, file, "--json")
    assert run.code == 2, run
    assert run.stdout == ""
    assert run.error_lines == [
        f"creditsctl: post: {file}: 2 bad lines; nothing was sent (fix and run again):",
        "  line 3: amount: must be greater than 0",
        "  line 4: not JSON (Expecting property name enclosed in double quotes at column 2)",
    ]
    assert await balance(ledger, user_id) == 0
    assert await journal(ledger, user_id) == []


async def test_the_local_check_says_what_the_ledger_would(ledger: LedgerClient) -> None:
    """The line creditsctl refuses, sent to the ledger directly, is refused for the same field with the same
    words: the check is the ledger's own."""
    user_id = new_user()
    cases = {
        "amount": pb.CreditRequest(user_id=user_id, amount=0, idempotency_key="k-1", reason="r"),
        "idempotency_key": pb.CreditRequest(user_id=user_id, amount=1, idempotency_key="hold:1", reason="r"),
        "reason": pb.CreditRequest(user_id=user_id, amount=1, idempotency_key="k-2", reason=" "),
    }
    local = {
        "amount": "amount: must be greater than 0",
        "idempotency_key": "idempotency_key: must not start with payment:, hold: or grant: (reserved)",
        "reason": "reason: must not be empty",
    }
    response = await ledger.post_batch([pb.BatchPosting(credit=request) for request in cases.values()])
    for index, (name, result) in enumerate(zip(cases, response.results, strict=True)):
        assert result.outcome == pb.POSTING_OUTCOME_REFUSED
        assert result.refusal.reason == "INVALID_ARGUMENT"
        assert result.refusal.field == f"postings[{index}].credit.{name}"
        assert result.refusal.message.endswith(local[name].split(": ", 1)[1])
    assert await journal(ledger, user_id) == []


@pytest.mark.parametrize(
    "options",
    [["--batch-size", "0"], ["--batch-size", "1001"], ["--batch-size", "many"], []],
    ids=["batch-0", "batch-1001", "batch-not-a-number", "no-file"],
)
async def test_usage_errors_exit_2(operator_env: dict[str, str], tmp_path: Path, options: list[str]) -> None:
    file = write(tmp_path / "one.jsonl", [posting("credit", new_user(), 1, "k-usage")])
    args = ["post", *options] + (["--file", file] if options else [])
    run = await creditsctl(*args, env=operator_env)
    assert run.code == 2, run
    assert run.stdout == ""


async def test_a_missing_file_exits_2(operator_env: dict[str, str], tmp_path: Path) -> None:
    run = await post(operator_env, str(tmp_path / "nope.jsonl"))
    assert run.code == 2, run
    assert run.error_lines == [
        f"creditsctl: post: --file {tmp_path / 'nope.jsonl'}: cannot read it (No such file or directory)"
    ]


# --- calls refused as a whole ---


async def test_a_token_without_the_role_stops_the_run_at_that_batch(
    ledger_target: str, ledger: LedgerClient, tmp_path: Path
) -> None:
    user_id, run_id = new_user(), uuid.uuid4().hex[:8]
    await ledger.credit(user_id, 10, f"seed-{run_id}", "seed")
    file = write(
        tmp_path / "roles.jsonl",
        [
            posting("debit", user_id, 1, f"d1-{run_id}"),
            posting("debit", user_id, 1, f"d2-{run_id}"),
            posting("credit", user_id, 5, f"c1-{run_id}"),
            posting("debit", user_id, 1, f"d3-{run_id}"),
            posting("debit", user_id, 1, f"d4-{run_id}"),
        ],
    )
    spender = cli_environment(LEDGER_TARGET=ledger_target, LEDGER_TOKEN=ROLE_TOKENS["spender"])
    run = await post(spender, file, "--json", "--batch-size", "2")
    assert run.code == 4, run
    document = run.json()
    assert (document["batches"], document["batches_answered"], document["applied"]) == (3, 1, 2)
    assert document["stopped"] == {
        "batch": 2,
        "first_line": 3,
        "last_line": 4,
        "reason": "PERMISSION_DENIED",
        "message": document["stopped"]["message"],
        "batch_applied_nothing": True,
        "batches_not_sent": 1,
        "postings_not_answered": 3,
    }
    complaint = run.error_lines[-1]
    assert complaint.startswith(
        "creditsctl: post: stopped at batch 2 of 3 (lines 3-4): refused by the ledger as a whole: PERMISSION_DENIED: "
    )
    assert (
        "(this batch holds 1 credit, 1 debit; credits need the role payments or admin, debits the role spender: "
        "check LEDGER_TOKEN's roles). Batch 1 was answered (above); nothing of it applied; batch 3 was not sent."
    ) in complaint
    assert await balance(ledger, user_id) == 8, "batch 1 applied, nothing after"

    payments = cli_environment(LEDGER_TARGET=ledger_target, LEDGER_TOKEN=ROLE_TOKENS["payments"])
    denied = await post(payments, file, "--json")
    assert denied.code == 4, denied
    assert (denied.json()["batches_answered"], denied.json()["stopped"]["reason"]) == (0, "PERMISSION_DENIED")
    assert "No batch was answered" in denied.error_lines[-1]


async def test_an_unknown_token_exits_4_and_an_unreachable_ledger_3(ledger_target: str, tmp_path: Path) -> None:
    file = write(tmp_path / "one.jsonl", [posting("credit", new_user(), 1, f"k-{uuid.uuid4().hex}")])
    unknown = cli_environment(LEDGER_TARGET=ledger_target, LEDGER_TOKEN="not-a-token-of-any-caller")
    run = await post(unknown, file)
    assert run.code == 4, run
    assert "UNAUTHENTICATED" in run.error_lines[-1]
    assert "LEDGER_TOKEN is not a caller of this ledger" in run.error_lines[-1]
    assert run.stdout.splitlines()[1] == "postings  1 in 1 batch (0 answered)"

    down = cli_environment(LEDGER_TARGET=f"127.0.0.1:{closed_port()}", LEDGER_TOKEN=ALL_ROLES_TOKEN)
    run = await post(down, file, "--json")
    assert run.code == 3, run
    assert run.json()["stopped"]["reason"] == "UNAVAILABLE"
    assert "No batch was answered; its outcome is unknown" in run.error_lines[-1]


# --- --atomic ---


async def test_atomic_batches_apply_entirely_or_not_at_all(
    operator_env: dict[str, str], ledger: LedgerClient, tmp_path: Path
) -> None:
    payer, payee, run_id = new_user(), new_user(), uuid.uuid4().hex[:8]
    await ledger.credit(payer, 30, f"seed-{run_id}", "seed")
    file = write(
        tmp_path / "transfers.jsonl",
        [
            posting("debit", payer, 20, f"t1-out-{run_id}"),
            posting("credit", payee, 20, f"t1-in-{run_id}"),
            posting("debit", payer, 20, f"t2-out-{run_id}"),  # 10 left: refused, and its pair with it
            posting("credit", payee, 20, f"t2-in-{run_id}"),
        ],
    )
    run = await post(operator_env, file, "--json", "--atomic", "--batch-size", "2")
    assert run.code == 1, run
    document = run.json()
    assert (document["atomic"], document["applied"], document["refused"], document["not_applied"]) == (True, 2, 1, 1)
    assert document["refused_by_reason"] == {"INSUFFICIENT_CREDITS": 1}, "a posting not applied is not refused"
    assert [(item["line"], item["outcome"], item["reason"]) for item in document["refusals"]] == [
        (3, "refused", "INSUFFICIENT_CREDITS"),
        (4, "not_applied", "BATCH_ABORTED"),
    ]
    assert document["refusals"][1]["message"] == "not applied: line 3 of this batch was refused (--atomic)"
    assert (await balance(ledger, payer), await balance(ledger, payee)) == (10, 20)
    table = await post(operator_env, file, "--atomic", "--batch-size", "2")
    assert "not applied  1 (--atomic: another posting of the batch was refused)" in table.stdout


async def test_ctrl_c_stops_after_the_batch_in_flight_with_every_answer_known(
    operator_env: dict[str, str], ledger: LedgerClient, tmp_path: Path
) -> None:
    user_id, run_id, count = new_user(), uuid.uuid4().hex[:8], 2_000
    file = write(tmp_path / "long.jsonl", [posting("credit", user_id, 1, f"i{i}-{run_id}") for i in range(count)])
    process = await start_creditsctl(operator_env, "post", "--file", file, "--batch-size", "1", "--json")
    for _ in range(WATCH_POLLS_MAX):
        if await balance(ledger, user_id) > 0:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("creditsctl posted nothing in time")
    process.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_SECONDS)
    assert process.returncode == 130, stderr.decode()
    document = json.loads(stdout)
    answered = document["batches_answered"]
    assert document["complete"] is False
    assert document["stopped"] == {
        "batch": answered + 1,
        "first_line": answered + 1,
        "last_line": answered + 1,
        "reason": "INTERRUPTED",
        "message": "interrupted by the operator",
        "batch_applied_nothing": True,
        "batches_not_sent": count - answered,
        "postings_not_answered": count - answered,
    }
    assert document["applied"] == answered == await balance(ledger, user_id), "every answer known: none in doubt"
    lines = [line for line in stderr.decode().splitlines() if line.startswith("creditsctl:")]
    assert lines == [
        "creditsctl: post: stopping after the batch in flight (again: stop at once)",
        f"creditsctl: post: stopped at batch {answered + 1} of {count} (lines {answered + 1:,}-{answered + 1:,}): "
        f"interrupted by the operator. Batches 1-{answered} were answered (above); batches {answered + 1}-{count} "
        "were not sent. Re-running the same file is safe: what applied answers replayed, nothing applies twice.",
    ]

    rerun = await post(operator_env, file, "--json")
    assert rerun.code == 0, rerun
    assert (rerun.json()["applied"], rerun.json()["replayed"]) == (count - answered, answered)
    assert await balance(ledger, user_id) == count
    assert len(await journal(ledger, user_id)) == count


class StuckLedger(pb_grpc.LedgerServiceServicer):
    """A ledger whose PostBatch never answers (real gRPC): a batch stays in flight as long as the test likes."""

    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def PostBatch(self, request: pb.PostBatchRequest, context: grpc.aio.ServicerContext) -> pb.PostBatchResponse:
        self.called.set()
        await asyncio.Event().wait()
        raise AssertionError("never answered")


async def read_until(stream: asyncio.StreamReader, text: str) -> list[str]:
    lines: list[str] = []
    while not any(text in line for line in lines):
        line = await asyncio.wait_for(stream.readline(), CLI_TIMEOUT_SECONDS)
        assert line, f"the stream ended before {text!r}: {lines}"
        lines.append(line.decode())
    return lines


async def test_a_second_ctrl_c_stops_at_once_with_the_batch_in_doubt(tmp_path: Path) -> None:
    stuck = StuckLedger()
    server = grpc.aio.server()
    pb_grpc.add_LedgerServiceServicer_to_server(stuck, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        file = write(tmp_path / "two.jsonl", [posting("credit", new_user(), 1, f"k{i}") for i in range(3)])
        env = cli_environment(LEDGER_TARGET=f"127.0.0.1:{port}", LEDGER_TOKEN=ALL_ROLES_TOKEN)
        process = await start_creditsctl(env, "post", "--file", file, "--batch-size", "2", "--json")
        await asyncio.wait_for(stuck.called.wait(), CLI_TIMEOUT_SECONDS)
        assert process.stderr is not None
        process.send_signal(signal.SIGINT)
        await read_until(process.stderr, "stopping after the batch in flight")
        assert process.returncode is None, "the first Ctrl-C waits for the batch in flight"
        process.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_SECONDS)
    finally:
        await server.stop(0)
    assert process.returncode == 130, stderr.decode()
    stopped = json.loads(stdout)["stopped"]
    assert (stopped["batch"], stopped["reason"], stopped["batch_applied_nothing"]) == (1, "INTERRUPTED", False)
    assert stopped["batches_not_sent"] == 1
    assert stderr.decode().splitlines()[-1] == (
        "creditsctl: post: stopped at batch 1 of 2 (lines 1-2): interrupted by the operator. No batch was answered; "
        "its outcome is unknown; batch 2 was not sent. "
        "Re-running the same file is safe: what applied answers replayed, nothing applies twice."
    )
