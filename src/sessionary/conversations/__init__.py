"""Sessions: the one conversation object, with its messages and stored responses."""
