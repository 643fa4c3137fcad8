"""SettlePaymentBatch's settling: the valid requests of one call in one statement, as the group commit does.

`PaymentsStore.settle_batch` runs ledger_payment_settle once per request in one statement (one round
trip, one transaction, one WAL flush; users locked in ascending order, so two batches never deadlock;
a redelivery inside the batch is a duplicate of its original). When the statement fails as a whole, the
rule of services/ledger/group_commit.py applies:
- errors.Unavailable (database unreachable, deadlock or serialization rollback): raised, so the call
  answers UNAVAILABLE and the caller retries it whole (what committed before the break answers the
  retry as duplicates);
- any other LedgerError (errors.Internal: a constraint that validation should have caught): each
  request is settled alone, so only the offending one is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from services.ledger import errors
from services.ledger.payments.domain import EventSource, PaymentDetails, Settled
from services.ledger.payments.store import PaymentsStore

log = logging.getLogger(__name__)


async def settle_each(
    payments: PaymentsStore, requests: Sequence[tuple[PaymentDetails, EventSource | None]]
) -> list[Settled | errors.LedgerError]:
    """One result per request, in order: settled, or its own refusal; raises errors.Unavailable for the whole."""
    try:
        return await payments.settle_batch(requests)
    except errors.Unavailable:
        raise
    except errors.LedgerError:
        log.warning("a SettlePaymentBatch statement of %d settlements failed; settling them one by one", len(requests))
    answers: list[Settled | errors.LedgerError] = []
    for details, source in requests:
        try:
            answers.append(await payments.settle(details, source))
        except errors.LedgerError as refusal:
            answers.append(refusal)
    return answers
