"""The load engine: schedules of intended send times, measurement, thresholds, and the
sessions that drive a Jina Flow over WebSocket."""
