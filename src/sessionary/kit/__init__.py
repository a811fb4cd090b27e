"""Shared plumbing: database, errors, ids, HTTP middleware. No business rules live here."""
