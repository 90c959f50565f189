"""What both halves share and neither owns: units, event-loop set-up, histogram buckets, gRPC channel options,
the WebSocket client link. Nothing here imports the relay server or the load engine."""
