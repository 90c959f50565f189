"""The load engine. Data flows one way: model -> session -> wire -> socket, and socket -> wire -> measure -> outputs.

    config.py    what a run is asked to do (LoadConfig) and what the target's URL implies
    engine.py    the run in one screen: a worker's sessions, model, ticker and measurement; run_load
    models/      when requests go out: open, closed (one file each, one interface), schedule, waker
    sessions/    one kind per protocol (ws, grpc, http), each a relay.common.link.Link
    measure/     the meter (every outcome), histograms, hops, accounting, the time series, the recorder
    outputs/     live line, summary, time series file, request log, Prometheus, report
    procs.py     --procs: forked workers, their queue, the merge; result.py: results and how they merge
    ingest/      `flowrelay ingest`: a user's Documents into a Flow, nothing lost, resumable
"""
