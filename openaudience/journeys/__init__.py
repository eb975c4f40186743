"""Journeys: automated marketing as YAML (docs/journeys.md).

- `spec`: the language (steps, triggers, schedules, holdout, goal) and its JSON Schema;
- `source`: reading journeys/ with every rule checked at its line, and the plan (nodes) of each;
- `engine`: cycles, positions and the tick that moves people, sends through the delivery engine,
  the operations (start, pause, resume, stop), simulation;
- `clock`: time zones and schedules;
- `report`: the flow chart, the sends' funnels and the holdout's lift."""
