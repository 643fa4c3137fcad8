from tests.conftest import new_key


async def test_credit_then_balance(ledger, user_id):
    response = await ledger.credit(user_id, 100, new_key(), "welcome")
    assert response.transaction.balance_after == 100
    balance = await ledger.get_balance(user_id)
    assert balance.balance == 100
