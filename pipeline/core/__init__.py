"""The request core: deadline and budgets, the stage contract, request state, run context,
settings, the plan, the runner and the graph. It imports nothing else of ragpacer."""
