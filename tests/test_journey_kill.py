"""A journey killed in the middle of a cycle, with a send in flight, resumes on both engines with
no person sent twice and nobody skipped at any step (checked against the receiving server's
log); and a property test of the tree over random journeys and crowds: every entrant ends in
exactly the leaves its path leads to (copy and time branches duplicate, random branches
partition), counts conserve at every branch, and random splits keep to their percentages."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from connectors.webhook_receiver import WebhookReceiver
from openaudience.core.settings import PROJECT_ROOT
from openaudience.delivery.source import load_destinations
from openaudience.journeys import engine
from openaudience.journeys.source import load_journeys
from openaudience.segments.engine import write_version
from openaudience.segments.source import load_project
from tests.support.receiving import settled

SECRET = "journey-kill-secret"
PEOPLE = 1_200
T0 = dt.datetime(2026, 6, 20, 1, 0)


def _project(tmp_path: Path, destinations: dict[str, str], journeys: dict[str, dict]):
    a, d, j = tmp_path / "audiences", tmp_path / "destinations", tmp_path / "journeys"
    for folder in (a, d, j):
        folder.mkdir(exist_ok=True)
    (a / "people.yml").write_text("name: people\nid_type: one_id\n"
                                  "where:\n  tag: {name: city, is_not_null: true}\n")
    for name, text in destinations.items():
        (d / f"{name}.yml").write_text(text)
    for name, body in journeys.items():
        (j / f"{name}.yml").write_text(yaml.safe_dump({"name": name, **body}, sort_keys=False))
    return a, d, j


def _context(wh, a: Path, d: Path, j: Path, environ=None):
    project = load_project(a)
    dests = load_destinations(d, project)
    journeys = load_journeys(j, project, dests)
    assert not journeys.problems, journeys.all_problems
    return engine.Context(wh, journeys, dests, project, environ=environ)


def _people(wh, n: int) -> list[str]:
    ids = [f"{i:05d}" for i in range(n)]
    write_version(wh, "people", "one_id", pa.table({"one_id": ids, "id_value": ids}), dt.date(2026, 6, 19),
                  "test")
    return ids


def _webhook(name: str, url: str, template: str) -> str:
    return (f"name: {name}\naudience: people\nchannel: webhook\nmode: full\nschedule: manual\n"
            f"batch_size: 10\nconcurrency: 2\nwebhook:\n  url: {url}\n  secret_env: OA_TEST_KILL_SECRET\n"
            f"  params: {{template: {template}}}\n")


def _tick_and_kill_at_half(env: dict, environ: dict, folders: tuple[Path, Path, Path], receiver,
                           seconds: float = 120) -> dict:
    """A tick in a process of its own (tests/support/run_journey.py) over the audience,
    destination and journey folders, killed with SIGKILL once the receiver holds half of PEOPLE;
    returns what the receiver settled."""
    env = {**env, **environ, "PYTHONPATH": str(PROJECT_ROOT), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "tests.support.run_journey", *map(str, folders), T0.isoformat()]
    ticker = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + seconds
    try:
        while len(receiver.state.accepted) < PEOPLE * 0.5:
            assert ticker.poll() is None, ticker.communicate()
            assert time.monotonic() < deadline, "the tick made no progress"
            time.sleep(0.02)
    finally:
        os.kill(ticker.pid, signal.SIGKILL)
        ticker.communicate()
    return settled(receiver)


@pytest.mark.slow  # a process killed mid-send, on both engines
def test_a_journey_killed_mid_send_resumes_with_no_one_sent_twice_or_skipped(target, tmp_path):
    wh = target.warehouse
    ids = _people(wh, PEOPLE)
    receiver = WebhookReceiver(secret=SECRET, delay_s=0.05).start()
    a, d, j = _project(tmp_path, {"first": _webhook("first", receiver.url, "first"),
                                  "second": _webhook("second", receiver.url, "second")},
                       {"kill": {"trigger": {"audience": "people"},
                                 "steps": [{"send": {"id": "one", "destination": "first"}},
                                           {"wait": {"days": 1}},
                                           {"send": {"id": "two", "destination": "second"}}]}})
    environ = {"OA_TEST_KILL_SECRET": SECRET}
    ctx = _context(wh, a, d, j, environ)
    engine.start(ctx, "kill", T0)
    acked = _tick_and_kill_at_half(target.env, environ, (a, d, j), receiver)
    assert PEOPLE * 0.5 <= len(acked) < PEOPLE
    counts = engine.node_counts(wh, "kill")
    assert counts["one"]["waiting"] == PEOPLE  # sending, in a run the next tick resumes
    # the next tick (the sensor's, a minute later) resumes the run, then moves everyone on
    [r] = engine.tick(ctx, now=T0 + dt.timedelta(minutes=1))
    assert not r.error and r.moved["one"] == PEOPLE, r
    firsts = [m for m in receiver.state.accepted.values() if m["params"]["template"] == "first"]
    assert sorted(m["user_profile"]["target_id"] for m in firsts) == ids  # nobody skipped
    assert len(firsts) == len({m["user_profile"]["target_id"] for m in firsts})  # nobody acted on twice
    resent = {k for k, n in receiver.state.seen.items() if n > 1}
    assert resent <= acked  # only what was acknowledged in the moment of the kill went again
    [r] = engine.tick(ctx, now=T0 + dt.timedelta(days=1, minutes=2))
    receiver.stop()
    assert r.status == "completed", r
    seconds = [m for m in receiver.state.accepted.values() if m["params"]["template"] == "second"]
    assert sorted(m["user_profile"]["target_id"] for m in seconds) == ids
    rows = wh.query("select node, count(*), count(distinct one_id) from journeys.journey_positions "
                    "where journey = 'kill' group by node order by node")
    # one row per person per step
    assert rows == [(n, PEOPLE, PEOPLE) for n in ("one", "start", "two", "wait_1")]
    [(runs,)] = wh.query("select count(distinct run_id) from journeys.journey_actions "
                         "where journey = 'kill'")
    assert runs == 2


# -- the tree, over random journeys and crowds ---------------------------------------------------------
def _random_steps(rng: random.Random, depth: int, counter: list) -> list:
    """A random list of steps ending in a leaf or a branch."""
    steps: list = []
    if rng.random() < 0.4:
        counter[0] += 1
        steps.append({"wait": {"hours": rng.randint(1, 48)}})
    if depth >= 3 or rng.random() < 0.3:
        counter[0] += 1
        steps.append(rng.choice(["end", {"send": {"destination": "export"}},
                                 {"generate_audience": {"name": f"gen_{counter[1]}_{counter[0]}"}}]))
        return steps
    kind = rng.choice(["copy_branch", "random_branch", "time_branch"])
    n = rng.randint(2, 4)
    counter[0] += 1
    if kind == "random_branch":
        cuts = sorted(rng.sample(range(1, 100), n - 1))
        percents = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
        branches = [{"name": f"b{i}", "percent": p, "steps": _random_steps(rng, depth + 1, counter)}
                    for i, p in enumerate(percents)]
    elif kind == "time_branch":
        branches = [{"name": f"b{i}", **({"at": f"{rng.randint(0, 23):02d}:00"} if rng.random() < 0.5
                                         else {"after": {"hours": rng.randint(1, 30)}}),
                     "steps": _random_steps(rng, depth + 1, counter)} for i in range(n)]
    else:
        branches = [{"name": f"b{i}", "steps": _random_steps(rng, depth + 1, counter)} for i in range(n)]
    steps.append({kind: {"branches": branches}})
    return steps


def _expected_leaves(plan, one_id: str) -> list[str]:
    """The leaves a person reaches, by the tree's rules (random: the stable draw)."""
    out: list[str] = []

    def walk(node_id: str) -> None:
        node = plan.nodes[node_id]
        if not node.children:
            out.append(node_id)
            return
        if node.kind == "random_branch":
            draw, edge = engine.bucket(f"{plan.name}:{node.id}:{one_id}"), 0
            for b in node.config["branches"]:
                edge += round(b["percent"] * 100)
                if draw < edge:
                    walk(node.child(b["name"]))
                    return
            return
        for _, child in node.children:
            walk(child)

    walk("start")
    return sorted(out)


@pytest.mark.slow  # twenty random journeys on both engines
@pytest.mark.parametrize("seed", range(3))
def test_random_trees_route_every_entrant_to_its_leaves_and_conserve_counts(target, tmp_path, seed):
    wh = target.warehouse
    rng = random.Random(seed)
    crowd = _people(wh, rng.randint(300, 900))
    export = ("name: export\naudience: people\nchannel: file\nid_type: one_id\nmode: full\n"
              "schedule: manual\nfile: {folder: exports, format: csv}\n")
    bodies = {f"tree{seed}_{i}": {"trigger": {"audience": "people"},
                                  "steps": _random_steps(random.Random(seed * 100 + i), 0,
                                                         [0, f"{seed}_{i}"])}
              for i in range(5)}
    a, d, j = _project(tmp_path, {"export": export}, bodies)
    ctx = _context(wh, a, d, j)
    for name in bodies:
        engine.start(ctx, name, T0)
    now = T0
    for _ in range(80):  # a tick every 6 hours until everyone has left
        if not engine.tick(ctx, now=now):
            break
        now += dt.timedelta(hours=6)
    for name in bodies:
        plan = ctx.journeys.plans[name]
        assert engine.journey_row(wh, name)["status"] == "completed", name
        counts = engine.node_counts(wh, name)
        reached = {n: counts.get(n, {}).get("reached", 0) for n in plan.nodes}
        assert reached["start"] == len(crowd)
        for node in plan.nodes.values():
            kids = [c for _, c in node.children]
            if node.kind == "random_branch":
                assert sum(reached[c] for c in kids) == reached[node.id], (name, node.id)
                n = reached[node.id]
                for b in node.config["branches"]:
                    p = b["percent"] / 100
                    got = counts[node.id]["branches"].get(b["name"], 0)
                    assert abs(got - n * p) <= 3 * (n * p * (1 - p)) ** 0.5 + 1, (name, node.id, b, got, n)
            else:
                for c in kids:
                    assert reached[c] == reached[node.id], (name, node.id, c)
        leaves = {}
        for one_id, node in wh.query("select one_id, node from journeys.journey_positions "
                                     "where journey = %s", [name]):
            if not plan.nodes[node].children:
                leaves.setdefault(one_id, []).append(node)
        for one_id in crowd:
            assert sorted(leaves.get(one_id, [])) == _expected_leaves(plan, one_id), (name, one_id)


def test_a_generated_audience_gets_a_version_per_cycle_and_keeps_the_last_five(target, tmp_path):
    wh = target.warehouse
    crowd = _people(wh, 50)
    a, d, j = _project(tmp_path, {}, {"daily_gen": {
        "trigger": {"audience": "people", "schedule": {"daily": "09:00"}, "reentry": "every_cycle"},
        "steps": [{"generate_audience": {"name": "gen_daily"}}]}})
    ctx = _context(wh, a, d, j)
    engine.start(ctx, "daily_gen", T0 - dt.timedelta(hours=1))
    for day in range(7):
        engine.tick(ctx, now=T0 + dt.timedelta(days=day))
    versions = wh.query("select version, size, kept from audiences.audience_versions "
                        "where audience = 'gen_daily' order by version")
    assert versions == [(v, 50, v > 2) for v in range(1, 8)]
    kept = wh.query("select version, count(*) from audiences.audience_members where audience = 'gen_daily' "
                    "group by version order by version")
    assert kept == [(v, 50) for v in range(3, 8)]
    assert sorted(o for (o,) in wh.query("select one_id from audiences.audience_members where audience = "
                                         "'gen_daily' and version = 7")) == crowd
