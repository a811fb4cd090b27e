"""The typed groups of configuration that config.py composes into one `Settings`.

Each group is plain pydantic and imports nothing of the server, so configuration sits below every
domain: a domain reads its group, config.py never reads a domain.
"""
