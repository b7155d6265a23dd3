"""Step implementations: `run(ctx, inputs, out)` writes the step's files under `out`. Hashing,
timing, caching and atomic commit are the executor's job, not the step's."""
