def test_balance_of_a_new_partner(api):
    assert api("balance") == {"balance": "100", "currency": "USD"}
