"""ChatKit sessions: short-lived client secrets a browser may hold, over ordinary sessions."""
