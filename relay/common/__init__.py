"""What both halves share and neither owns: units, event-loop set-up and task supervision (loop), precise timers,
histogram buckets, gRPC channel options and the `Call` stream, the WebSocket client shell (ws_client) and the link
base every client link stands on (link), and the web page (web/: template, script, uPlot) that both halves'
dashboards and the report draw. Nothing here imports the relay server or the load engine."""
