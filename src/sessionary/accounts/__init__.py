"""Accounts, API keys and the Principal that every authenticated route receives."""
