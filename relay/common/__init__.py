"""What both halves share and neither owns: units, event-loop set-up, histogram buckets, gRPC channel options,
the WebSocket client link, the web page (web/: template, script, uPlot) both halves' dashboards and the
report draw. Nothing here imports the relay server or the load engine."""
