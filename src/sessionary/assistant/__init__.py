"""Assistant turns: prompt resolution, orchestration, Responses payloads, SSE streaming, enhance."""
