"""Accounts: Credit, Debit, AdminAdjust, GetBalance, ListTransactions, Anonymize;
the journal every capability posts to.
"""
