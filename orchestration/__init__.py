"""OpenAudience: the orchestration layer (Dagster definitions, warehouse access, the ``oa`` CLI)."""
