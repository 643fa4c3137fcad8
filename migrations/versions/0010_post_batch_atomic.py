"""ledger_post_batch_atomic: a batch of postings that applies whole or not at all (issue 19, PostBatch atomic).

It runs ledger_post_batch (the same rules, locks and answers, row for row) and, when any posting was refused,
raises SQLSTATE LD001 instead of answering: the statement, and so everything the batch wrote, is rolled back.
The error's DETAIL is the first refused posting's answer (the lowest ordinal, as JSON), the one the caller is
told about; every other posting was not applied because of it. The lowest ordinal is the refusal the postings
would have met applied one by one in request order: every posting before it applied, so its account looked as
it would have.

Raising instead of rolling back a savepoint keeps the batch one statement without a subtransaction; a batch
with no refusal answers the rows of ledger_post_batch unchanged.

Revision ID: 0010_post_batch_atomic
Revises: 0009_post_one_through_batch
Create Date: 2026-12-06
"""

from alembic import op

revision = "0010_post_batch_atomic"
down_revision = "0009_post_one_through_batch"
branch_labels = None
depends_on = None

POST_BATCH_ATOMIC_SQL = r"""
CREATE OR REPLACE FUNCTION ledger_post_batch_atomic(
    p_user_ids text[], p_deltas bigint[], p_kinds text[], p_idempotency_keys text[], p_fingerprints bytea[],
    p_reasons text[], p_references text[], p_metadata jsonb[], p_actors text[], p_allow_negative boolean[]
) RETURNS TABLE (
    ordinal integer, outcome text, balance bigint, id bigint, user_id text, delta bigint, balance_after bigint,
    kind text, idempotency_key text, reason text, reference text, payment_id bigint, admin_action_id bigint,
    hold_id bigint, created_at timestamptz, held bigint
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_row     record;
    v_refused jsonb;      -- the refused posting with the lowest ordinal, as JSON
BEGIN
    FOR v_row IN SELECT * FROM ledger_post_batch(p_user_ids, p_deltas, p_kinds, p_idempotency_keys, p_fingerprints,
                                                 p_reasons, p_references, p_metadata, p_actors, p_allow_negative)
    LOOP
        IF v_row.outcome NOT IN ('applied', 'replayed') THEN
            IF v_refused IS NULL OR (v_refused->>'ordinal')::integer > v_row.ordinal THEN
                v_refused := to_jsonb(v_row);
            END IF;
        ELSIF v_refused IS NULL THEN
            ordinal := v_row.ordinal; outcome := v_row.outcome; balance := v_row.balance; id := v_row.id;
            user_id := v_row.user_id; delta := v_row.delta; balance_after := v_row.balance_after;
            kind := v_row.kind; idempotency_key := v_row.idempotency_key; reason := v_row.reason;
            reference := v_row.reference; payment_id := v_row.payment_id;
            admin_action_id := v_row.admin_action_id; hold_id := v_row.hold_id;
            created_at := v_row.created_at; held := v_row.held;
            RETURN NEXT;
        END IF;
    END LOOP;
    IF v_refused IS NOT NULL THEN
        RAISE EXCEPTION 'ledger_post_batch_atomic: posting % was refused (%); nothing applied',
                        v_refused->>'ordinal', v_refused->>'outcome'
              USING ERRCODE = 'LD001', DETAIL = v_refused::text;
    END IF;
END
$$;
"""


def upgrade() -> None:
    op.execute(POST_BATCH_ATOMIC_SQL)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION ledger_post_batch_atomic(text[], bigint[], text[], text[], bytea[], text[], text[], jsonb[], "
        "text[], boolean[])"
    )
