"""Credits: the ledger, prices, credit headers and idempotent retries."""
