"""ledger_post follows ledger_post_batch's rules instead of restating them (issue 18).

ledger_post (0001, 0003) and ledger_post_batch (0004) each wrote out the same rules: create the account on
its first credit (a first debit is refused), a known idempotency key answers the original entry (or
idempotency_key_reused), an anonymized account takes nothing, a spend never goes below the held credits after
lazy hold expiry, an admin adjustment records its admin action, metadata goes beside the entry. ledger_post is
now ledger_post_batch of one request, so a rule changes in one place.

Kept in ledger_post: a retry whose entry is found without a lock is answered at once, as before (a replay
does not wait for the account's lock); the batch answers the same again under the lock when it is not.
The answers are the same, row for row (tests/ledger: every Credit, Debit and AdminAdjust test, with group
commit on and off). The current definitions are read in migrations/sql/accounts/.

Revision ID: 0009_post_one_through_batch
Revises: 0008_payment_change_opening
Create Date: 2026-12-06
"""

import re
from pathlib import Path

from alembic import op

revision = "0009_post_one_through_batch"
down_revision = "0008_payment_change_opening"
branch_labels = None
depends_on = None

POST_SQL = r"""
CREATE OR REPLACE FUNCTION ledger_post(
    p_user_id text, p_delta bigint, p_kind text, p_idempotency_key text, p_fingerprint bytea, p_reason text,
    p_reference text, p_metadata jsonb, p_actor text, p_allow_negative boolean
) RETURNS TABLE (
    outcome text, balance bigint, id bigint, user_id text, delta bigint, balance_after bigint, kind text,
    idempotency_key text, reason text, reference text, payment_id bigint, admin_action_id bigint, hold_id bigint,
    created_at timestamptz, held bigint
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_entry credit_transactions%ROWTYPE;
BEGIN
    -- A retry found without a lock is answered at once; everything else is ledger_post_batch's rules.
    SELECT * INTO v_entry FROM credit_transactions t
     WHERE t.user_id = p_user_id AND t.idempotency_key = p_idempotency_key;
    IF FOUND THEN
        RETURN QUERY SELECT
            CASE WHEN v_entry.request_fingerprint = p_fingerprint THEN 'replayed' ELSE 'idempotency_key_reused' END,
            NULL::bigint, v_entry.id, v_entry.user_id, v_entry.delta, v_entry.balance_after, v_entry.kind,
            v_entry.idempotency_key, v_entry.reason, v_entry.reference, v_entry.payment_id,
            v_entry.admin_action_id, v_entry.hold_id, v_entry.created_at, NULL::bigint;
        RETURN;
    END IF;
    RETURN QUERY SELECT b.outcome, b.balance, b.id, b.user_id, b.delta, b.balance_after, b.kind, b.idempotency_key,
                        b.reason, b.reference, b.payment_id, b.admin_action_id, b.hold_id, b.created_at, b.held
      FROM ledger_post_batch(ARRAY[p_user_id], ARRAY[p_delta], ARRAY[p_kind], ARRAY[p_idempotency_key],
                             ARRAY[p_fingerprint], ARRAY[p_reason], ARRAY[p_reference], ARRAY[p_metadata],
                             ARRAY[p_actor], ARRAY[p_allow_negative]) AS b;
END
$$;
"""


def upgrade() -> None:
    op.execute(POST_SQL)


def downgrade() -> None:
    text = Path(__file__).with_name("0003_holds.py").read_text(encoding="utf-8")
    op.execute(_as_replacement(text, "ledger_post"))


def _as_replacement(revision_text: str, name: str) -> str:
    """One function exactly as an earlier revision wrote it, as CREATE OR REPLACE."""
    pattern = rf"^CREATE (?:OR REPLACE )?FUNCTION {name}\(.*?^\$\$;$"
    found = re.search(pattern, revision_text, re.MULTILINE | re.DOTALL)
    assert found is not None, f"{name} not found"
    return re.sub(r"^CREATE (?:OR REPLACE )?FUNCTION", "CREATE OR REPLACE FUNCTION", found.group(0), count=1)
