"""Bulk generation: translate or summarize whole datasets with a Ray actor pool, exactly once."""
