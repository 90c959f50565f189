"""The relay: a Jina-compatible WebSocket gateway with built-in Executors, and links to real Flows."""
