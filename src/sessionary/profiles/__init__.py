"""Assistant profiles: named instructions, model and tools; a ChatKit workflow names one."""
