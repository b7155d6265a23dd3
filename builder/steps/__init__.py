"""Step implementations: `run(ctx, inputs, out)` writes the step's files under `out`. Hashing,
timing, caching and atomic commit are the executor's job, not the step's."""

# The report a step writes beside its output (verify, package): what it measured and found. Latency
# differs run to run, so these files are the nodes' `reports`, outside their output's digest.
REPORT_FILE = "report.json"
REPORT_PAGE = "report.md"
