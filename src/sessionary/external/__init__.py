"""External users: a platform's own end users, with their own keys, prompts, credits, library."""
