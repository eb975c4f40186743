"""Tick journeys in a process of its own (so a test can kill it): the real engine over the
audience, destination and journey folders given on the command line, at a given time (UTC)."""

import datetime as dt
import sys
from pathlib import Path

from openaudience.core.warehouse import Warehouse
from openaudience.delivery.source import load_destinations
from openaudience.journeys.engine import Context, tick
from openaudience.journeys.source import load_journeys
from openaudience.segments.source import load_project

if __name__ == "__main__":
    audiences, destinations, journeys = (Path(p) for p in sys.argv[1:4])
    at = sys.argv[4]
    project = load_project(audiences)
    dests = load_destinations(destinations, project)
    ctx = Context(Warehouse(), load_journeys(journeys, project, dests), dests, project)
    for report in tick(ctx, None, dt.datetime.fromisoformat(at)):
        print(report.journey, report.status, report.moved, report.error, flush=True)
