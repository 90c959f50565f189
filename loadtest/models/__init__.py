"""Load models: when requests are due (open model: schedules and the waker) or how many stay in flight (closed)."""
