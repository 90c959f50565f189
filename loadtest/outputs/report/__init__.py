"""The HTML report of a results folder, and the comparison of two: `flowrelay report`.

A run's results folder (`summary.json` and `timeseries.jsonl`) becomes one self-contained HTML file that opens
with no network: the summary, thresholds with pass/fail, throughput and latency percentiles over time, the
HdrHistogram percentile distribution, where the time goes per hop (over time, and over the run), the sender's
in-flight count, drops and lag, and errors over time and by reason. Two folders become a comparison: figures
side by side with their ratio B/A, and latency-over-time and percentile-distribution overlays.

The same page, served live, is `flowrelay load --dashboard` (loadtest.outputs.dashboard): at a run's end the
live page shows what its report shows.

    data.py     the results folder, read and checked; what the page derives from a summary
    figures.py  the chart specs (drawn in the browser by relay/common/web's script and uPlot)
    page.py     the page's HTML: sections, tables, the live and the written page

Imports of this package: the standard library, orjson, relay.common.web, loadtest.outputs.timeseries.
"""

from loadtest.outputs.report.data import Results, ResultsError, load_results
from loadtest.outputs.report.page import (
    COMPARISON_FILE,
    REPORT_FILE,
    final_sections,
    load_page,
    render_comparison,
    render_report,
    write_comparison,
    write_report,
)

__all__ = [
    "COMPARISON_FILE",
    "REPORT_FILE",
    "Results",
    "ResultsError",
    "final_sections",
    "load_page",
    "load_results",
    "render_comparison",
    "render_report",
    "write_comparison",
    "write_report",
]
