"""Embedding templates: JSON records in, natural-language search with extracted filters out."""
