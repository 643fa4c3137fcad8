"""Stripe failing: rate limits and 5xx are retried with backoff; a run that cannot finish says so, exits 3, and
leaves only whole repairs behind, so the next run completes the work without applying anything twice."""

from __future__ import annotations

import collections
import io
import time

import stripe

from services.reconciler.report import EXIT_OK, EXIT_RUN_FAILED
from services.reconciler.stripe_source import RetryPolicy
from tests.fakes import stripe_events as se
from tests.fakes.stripe_events import ChargeFields, new_id
from tests.reconciler.conftest import balance, buy, purchases_of, run


async def test_rate_limit_is_retried_after_retry_after(world, fake) -> None:
    purchase = buy(fake)
    fake.state.inject_fault(429, count=2, path_prefix="/v1/charges", retry_after_seconds=1)
    started = time.monotonic()

    report = await run(world, fake)

    assert time.monotonic() - started >= 2.0  # Retry-After honoured twice, whatever the backoff cap
    assert report.summary.completed
    assert report.summary.stripe_retries == 2
    assert await balance(world, purchase.user_id) == 100
    statuses = [request.status_code for request in fake.state.requests if request.path == "/v1/charges"]
    assert statuses == [429, 429, 200]


async def test_server_errors_are_retried_with_backoff(world, fake) -> None:
    purchase = buy(fake)
    fake.state.inject_fault(500, count=2, path_prefix="/v1/charges")
    fake.state.inject_fault(503, count=1, path_prefix="/v1/events")

    report = await run(world, fake)

    assert report.summary.exit_code == EXIT_OK
    assert report.summary.stripe_retries == 3
    assert await balance(world, purchase.user_id) == 100


async def test_should_retry_false_is_not_retried(world, fake) -> None:
    fake.state.inject_fault(500, count=1, path_prefix="/v1/events", should_retry=False)

    report = await run(world, fake)

    assert not report.summary.completed
    assert report.summary.stripe_requests == 1
    assert "HTTP 500" in (report.summary.failure or "")


async def test_refused_key_fails_at_once(world, fake) -> None:
    report = await run(world, fake, stripe_api_key="sk_test_not_the_right_key_000")

    assert report.summary.exit_code == EXIT_RUN_FAILED
    assert report.summary.stripe_requests == 1
    assert "AuthenticationError (HTTP 401)" in (report.summary.failure or "")
    assert "sk_test_not_the_right_key_000" not in (report.summary.failure or "")


async def test_persistent_failure_stops_the_run_and_the_next_run_finishes_the_work(world, fake) -> None:
    """Stripe fails mid-run: exit 3, a summary that says why, whole repairs of the pages done, nothing after."""
    now_seconds = fake.state.now_seconds()
    users = [f"user-fail-{index:03d}-{new_id('', 8)}" for index in range(250)]
    charges = [
        ChargeFields(
            charge_id=new_id("ch_"),
            amount_minor=500,
            currency="eur",
            created_seconds=now_seconds - 3600 + index,
            metadata=se.purchase_metadata(user_id, "small"),
            payment_intent_id=new_id("pi_"),
        )
        for index, user_id in enumerate(users)
    ]
    fake.state.add_charges(charges)
    newest_first = [charge.charge_id for charge in reversed(charges)]
    retry = RetryPolicy(attempts_max=3, backoff_seconds_max=0.01)

    # Stripe fails the first page three times in a row: the run stops before any repair.
    fake.state.inject_fault(500, count=3, path_prefix="/v1/charges")
    fake.state.inject_fault(429, count=1, path_prefix="/v1/events")  # the events page still succeeds (retried)
    failed_at_once = await run(world, fake, stripe_retry=retry)
    assert failed_at_once.summary.exit_code == EXIT_RUN_FAILED
    assert failed_at_once.items == []
    assert "still failing after 3 attempts" in (failed_at_once.summary.failure or "")
    assert failed_at_once.lines[-1]["completed"] is False

    # Stripe starts failing while page 1 is being repaired. The next page may already have been fetched (the
    # run fetches one page ahead): then it is repaired too, and the one after it fails.
    report = await run(world, fake, output=_FailNextPagesOnFirstDrift(fake), stripe_retry=retry, page_size_max=100)

    assert report.summary.exit_code == EXIT_RUN_FAILED
    pages_done = report.summary.charge_pages
    assert pages_done in (1, 2)
    done = newest_first[: 100 * pages_done]
    assert sorted(item["charge_id"] for item in report.items) == sorted(done)
    assert await _credited_charges(world) == collections.Counter(done)  # the pages done; nothing of the rest

    fake.state.clear_faults()
    finished = await run(world, fake)

    assert finished.summary.exit_code == EXIT_OK
    assert sorted(item["charge_id"] for item in finished.items) == sorted(newest_first[len(done) :])
    assert await _credited_charges(world) == collections.Counter(newest_first)  # each exactly once
    for user_id in users[:5] + users[-5:]:
        assert len(await purchases_of(world, user_id)) == 1


async def _credited_charges(world) -> collections.Counter[str]:
    """Charge ids of the ledger's credited payments, counted."""
    response = await world.reader.list_payments(page_size=500)
    assert not response.next_page_token
    return collections.Counter(payment.charge_id for payment in response.payments if payment.credit_transaction_id)


class _FailNextPagesOnFirstDrift(io.StringIO):
    """The report stream: when page 1's first repair is reported, Stripe starts failing every charges request."""

    def __init__(self, fake) -> None:
        super().__init__()
        self.fake = fake
        self.injected = False

    def write(self, text: str) -> int:
        if not self.injected and '"type":"drift"' in text:
            self.injected = True
            self.fake.state.inject_fault(500, count=3, path_prefix="/v1/charges")
        return super().write(text)


async def test_the_sdk_failing_on_its_own_ends_the_run_with_its_name(world, fake, monkeypatch, caplog) -> None:
    """A stripe SDK whose raw_request_async does not take these arguments (TypeError) is a failed run, logged."""

    async def raw_request_async_of_another_sdk(self, method_: str, url_: str) -> None:
        raise AssertionError("never reached: the call passes query parameters")

    monkeypatch.setattr(stripe.StripeClient, "raw_request_async", raw_request_async_of_another_sdk)

    report = await run(world, fake)

    assert report.summary.exit_code == EXIT_RUN_FAILED
    assert "the stripe SDK raised TypeError" in (report.summary.failure or "")
    assert any(record.getMessage().startswith("stripe SDK failed: TypeError") for record in caplog.records)
