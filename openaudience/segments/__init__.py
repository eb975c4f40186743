"""The segment language: audience YAML files in audiences/, checked into typed models and
compiled with sqlglot into SQL for the warehouse's dialect."""
