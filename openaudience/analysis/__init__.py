"""Analyses over the built models (RFM, AIPL, pivot) and the HTML/PNG reports made from them.

Each analysis reads the warehouse through :class:`openaudience.core.warehouse.Warehouse` with SQL
that runs unchanged on DuckDB and PostgreSQL, and returns plain DataFrames; ``charts`` turns
them into Vega-Lite charts and ``report`` into a self-contained HTML page or PNG images.
"""
