"""Measurement for the load engine: histograms, hops, accounting, the time series, and the recorder that
holds them for one process. Pure: no I/O, no clocks, no asyncio."""
