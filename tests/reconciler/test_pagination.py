"""Thousands of charges across many Stripe pages: every charge seen once, the ledger asked once per page."""

from __future__ import annotations

import collections
import logging

from services.reconciler.report import EXIT_OK
from tests.fakes import stripe_events as se
from tests.fakes.stripe_events import ChargeFields, new_id
from tests.reconciler.conftest import balance, ledger_snapshot, run

CHARGES_COUNT = 3_000
PAGE_SIZE = 100
USERS_COUNT = 100
SUITE_EVERY = 10  # in the repairing run, nine charges in ten belong to another product of the Stripe account


def _seed(fake, suite_every: int) -> tuple[list[str], collections.Counter[str]]:
    """Charges spread over the last two days, oldest first; every `suite_every`-th is the suite's, the others
    another product's. Returns (suite charge ids, suite charges per user)."""
    now_seconds = fake.state.now_seconds()
    users = [f"user-page-{index:04d}-{new_id('', 8)}" for index in range(USERS_COUNT)]
    fields: list[ChargeFields] = []
    suite: list[str] = []
    per_user: collections.Counter[str] = collections.Counter()
    for index in range(CHARGES_COUNT):
        foreign = index % suite_every != 0
        metadata = {"order": str(index)} if foreign else se.purchase_metadata(users[index % USERS_COUNT], "small")
        charge = ChargeFields(
            charge_id=new_id("ch_"),
            amount_minor=500,
            currency="eur",
            created_seconds=now_seconds - 2 * 86_400 + index * 50,
            metadata=metadata,
            payment_intent_id=new_id("pi_"),
        )
        fields.append(charge)
        if not foreign:
            suite.append(charge.charge_id)
            per_user[users[index % USERS_COUNT]] += 1
    assert fake.state.add_charges(fields) == CHARGES_COUNT
    return suite, per_user


def _charge_list_requests(fake) -> list:
    return [request for request in fake.state.requests if request.path == "/v1/charges"]


async def test_thousands_of_charges_each_seen_once_one_ledger_query_per_page(world, fake) -> None:
    suite, per_user = _seed(fake, SUITE_EVERY)
    pages_count = CHARGES_COUNT // PAGE_SIZE

    report = await run(world, fake, page_size_max=PAGE_SIZE)

    repaired = collections.Counter(item["charge_id"] for item in report.items)
    assert set(repaired) == set(suite)
    assert max(repaired.values()) == 1
    assert all(item["kind"] == "missing_credit" and item["action"] == "repaired" for item in report.items)
    assert report.summary.charges_scanned == CHARGES_COUNT
    assert report.summary.charges_suite == len(suite)
    assert report.summary.charge_pages == pages_count
    assert world.counter.list_payments_by_intent() == pages_count
    assert all(len(request.payment_intent_ids) <= PAGE_SIZE for request in world.counter.list_payments)
    for user_id, count in list(per_user.items())[:10]:
        assert await balance(world, user_id) == 100 * count

    # Stripe's cursor: each page starts after the last charge of the one before, and nothing is skipped.
    listed = _charge_list_requests(fake)
    assert len(listed) == pages_count
    assert "starting_after" not in listed[0].query
    assert all(request.query["limit"] == str(PAGE_SIZE) for request in listed)
    assert len({request.query.get("starting_after") for request in listed}) == pages_count

    # The steady state: the same window again finds every charge credited, with the same number of queries.
    world.counter.list_payments.clear()
    fake.state.clear_requests()
    snapshot = await ledger_snapshot_count(world)
    again = await run(world, fake, page_size_max=PAGE_SIZE)

    assert again.items == []
    assert again.summary.exit_code == EXIT_OK
    assert world.counter.list_payments_by_intent() == pages_count
    assert again.summary.ledger_payments_scanned == snapshot
    assert len(_charge_list_requests(fake)) == pages_count
    assert again.summary.stripe_requests == pages_count + 1  # + the (empty) Events API page


async def ledger_snapshot_count(world) -> int:
    total = 0
    page_token = ""
    while True:
        response = await world.reader.list_payments(page_size=500, page_token=page_token)
        total += len(response.payments)
        page_token = response.next_page_token
        if not page_token:
            return total


async def test_dry_run_over_many_pages_reports_each_of_thousands_of_charges_once(world, fake, caplog) -> None:
    suite, _ = _seed(fake, suite_every=1)
    caplog.set_level(logging.INFO, logger="services.reconciler")

    report = await run(world, fake, page_size_max=PAGE_SIZE, dry_run=True, progress_interval_seconds=0)

    assert len(suite) == CHARGES_COUNT
    assert sorted(item["charge_id"] for item in report.items) == sorted(suite)
    assert {item["action"] for item in report.items} == {"would_repair"}
    assert world.counter.list_payments_by_intent() == CHARGES_COUNT // PAGE_SIZE
    progress = [record for record in caplog.records if record.getMessage() == "reconciler progress"]
    scanned = [record.charges_scanned for record in progress if record.stage == "charges"]
    assert scanned == list(range(PAGE_SIZE, CHARGES_COUNT + 1, PAGE_SIZE))
    assert all(record.charges_per_second > 0 for record in progress if record.stage == "charges")
    assert await ledger_snapshot(world) == []
