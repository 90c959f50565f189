"""Load models: when a worker's requests go out. One file per model behind one interface (loadtest.models.base), as
k6's lib/executor: open.py, closed.py; schedule.py (the open model's due times) and waker.py (waking the event loop
at a due time) serve them."""
