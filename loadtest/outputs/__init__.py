"""Outputs of a load run: each consumes the one stream of measurements (rows and the final summary)
and knows nothing of schedules or sessions: the live terminal line, the summary table and files,
Prometheus metrics, and the HTML report."""
