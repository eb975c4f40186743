"""Real-time events: their definitions (events/*.yml), the reporting contract, the collector,
the event log and its way into the warehouse (docs/events.md)."""
