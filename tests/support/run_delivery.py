"""Deliver one destination in a process of its own (so a test can kill it): the real engine
over the audience and destination folders given on the command line."""

import sys
from pathlib import Path

from openaudience.delivery.engine import deliver
from openaudience.delivery.source import load_destinations
from openaudience.segments.source import load_project

if __name__ == "__main__":
    audiences, destinations, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    dests = load_destinations(destinations, load_project(audiences))
    for summary in deliver(dests, name):
        print(summary.run_id, summary.status, summary.counts, "resumed" if summary.resumed else "",
              flush=True)
