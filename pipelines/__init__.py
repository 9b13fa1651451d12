"""pipelines: Prefect flows, Ray jobs, storage and the `s2s` command line around s2s_core."""
