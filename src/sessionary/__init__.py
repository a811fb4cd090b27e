"""Sessionary: session-bound assistants and semantic search, with accounts and prepaid credits."""

__version__ = "0.1.0"
