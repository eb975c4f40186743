"""What a journey did: the tree drawn as a flow with people per node and edge (coloured like the
canvas of spec §3.2: grey not reached, green reached, red failed), each action's funnel from the
delivery log and receipts, and the holdout's lift on the goal with a confidence interval."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import altair as alt
import pandas as pd
import pyarrow as pa

from openaudience.core.report import Page
from openaudience.core.warehouse import Warehouse
from openaudience.journeys import engine
from openaudience.journeys.source import ROOT, Plan

COLOURS = {"not reached": "#b8b8b8", "reached": "#2f9e44", "waiting": "#1c7ed6", "failed": "#e03131"}
Z95 = 1.959963984540054


@dataclass
class Arm:
    """Conversion of treated and held-out people of one group (the journey, or one branch)."""

    name: str
    treated: int
    treated_converted: int
    held_out: int
    held_out_converted: int

    @property
    def treated_rate(self) -> float:
        return self.treated_converted / self.treated if self.treated else 0.0

    @property
    def held_out_rate(self) -> float:
        return self.held_out_converted / self.held_out if self.held_out else 0.0

    @property
    def lift(self) -> float:
        """Treated minus held-out conversion, in points of probability."""
        return self.treated_rate - self.held_out_rate

    @property
    def interval(self) -> tuple[float, float]:
        """The lift's 95 % confidence interval (normal approximation, unpooled)."""
        p1, n1, p2, n2 = self.treated_rate, self.treated, self.held_out_rate, self.held_out
        if not n1 or not n2:
            return (math.nan, math.nan)
        se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
        return (self.lift - Z95 * se, self.lift + Z95 * se)

    @property
    def p_value(self) -> float:
        """Two-sided two-proportion z-test (pooled)."""
        n1, n2 = self.treated, self.held_out
        if not n1 or not n2:
            return math.nan
        pooled = (self.treated_converted + self.held_out_converted) / (n1 + n2)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        if se == 0:
            return 1.0
        return math.erfc(abs(self.lift / se) / math.sqrt(2))

    @property
    def significant(self) -> bool:
        low, high = self.interval
        return not math.isnan(low) and (low > 0 or high < 0)

    def verdict(self) -> str:
        if not self.held_out or not self.treated:
            return "no comparison: no held-out (or no treated) people"
        low, high = self.interval
        direction = "raises" if self.lift > 0 else "lowers"
        if self.significant:
            return (f"{direction} conversion by {abs(self.lift) * 100:.1f} points "
                    f"(95 % CI {low * 100:+.1f} to {high * 100:+.1f}; p = {self.p_value:.3g}): significant")
        return (f"{self.lift * 100:+.1f} points (95 % CI {low * 100:+.1f} to {high * 100:+.1f}; "
                f"p = {self.p_value:.3g}): not significant at 95 %")


@dataclass
class Lift:
    goal: str
    overall: Arm
    arms: list[Arm] = field(default_factory=list)


CONVERTED = "oa_journey_converted"  # beside Spark: the entrants who reached the goal, copied back


def lift(wh: Warehouse, plan: Plan) -> Lift | None:
    """The goal's conversion among treated and held-out entrants (from the positions kept), for
    the journey and for each branch of its random branches. Beside a Spark warehouse the
    entrants go to Spark, and those who converted come back into the state store."""
    from openaudience.conditions.leaves import BehaviorLeaf
    from openaudience.journeys.engine import DUE, FCT_BEHAVIORS, POS, _qualify, lit

    goal = plan.journey.goal
    if goal is None or plan.journey.holdout is None:
        return None
    spark, wh = (wh, wh.state) if wh.state is not wh else (None, wh)
    leaf = BehaviorLeaf(did=goal.did, channels=goal.channels, object_attribute=goal.object_attribute,
                        object_values=goal.object_values, last_days=1)
    rows = _qualify(leaf.rows(), "b").sql(dialect=(spark or wh).engine)
    name = lit(plan.name)
    entered = f"select one_id, cycle, arrived_at from {POS} where journey = {name} and node = {lit(ROOT)}"
    converted = (f"select distinct s.one_id, s.cycle from {DUE if spark else f'({entered})'} s "
                 f"join {FCT_BEHAVIORS} b on b.one_id = s.one_id and {rows} "
                 "and b.occurred_at >= s.arrived_at "
                 f"and b.occurred_at < s.arrived_at + interval '{int(goal.within_days)} days'")
    on_spark = converted
    if spark is not None:  # computed there, read here
        converted = f"select one_id, cycle from {CONVERTED}"
    entrants = ("select s.one_id, s.cycle, s.held_out, "
                "case when c.one_id is null then 0 else 1 end as converted "
                f"from {POS} s left join ({converted}) as c on c.one_id = s.one_id and c.cycle = s.cycle "
                f"where s.journey = {name} and s.node = {lit(ROOT)}")
    groups = [("journey",
               f"select held_out, count(*), sum(converted) from ({entrants}) as e group by held_out")]
    for node in plan.nodes.values():
        if node.kind == "random_branch":
            groups.append((node.id, "select p.branch, e.held_out, count(*), sum(e.converted) "
                                    f"from ({entrants}) as e "
                                    f"join {POS} p on p.journey = {name} and p.node = {lit(node.id)} and "
                                    "p.one_id = e.one_id and p.cycle = e.cycle where p.branch is not null "
                                    "group by p.branch, e.held_out"))
    if not (spark or wh).table_exists("marts", "fct_behaviors"):
        return None
    if spark is None:
        with wh.connect(read_only=True) as conn:
            results = {key: wh.execute(conn, sql) for key, sql in groups}
    else:
        schema = pa.schema([("one_id", pa.string()), ("cycle", pa.int64()),
                            ("arrived_at", pa.timestamp("us"))])
        with wh.connect() as conn, spark.connect() as sconn, \
                sconn.view(DUE, wh.arrow_batches(conn, entered), schema):
            wh.pull(conn, CONVERTED, [("one_id", "text"), ("cycle", "integer")], sconn, on_spark)
            results = {key: wh.execute(conn, sql) for key, sql in groups}
            wh.execute(conn, f"drop table {CONVERTED}")

    def arm(label: str, rows: list[tuple]) -> Arm:
        by = {bool(h): (int(n), int(c or 0)) for h, n, c in rows}
        (t, tc), (h, hc) = by.get(False, (0, 0)), by.get(True, (0, 0))
        return Arm(label, t, tc, h, hc)

    overall = arm("journey", results.pop("journey"))
    arms = []
    for node_id, rows in results.items():
        branches = sorted({r[0] for r in rows})
        for b in branches:
            arms.append(arm(f"{node_id}: {b}", [r[1:] for r in rows if r[0] == b]))
    return Lift(f"{goal.did} within {goal.within_days} days of entering", overall, arms)


# -- the flow chart ------------------------------------------------------------------------------------
def _layout(plan: Plan) -> dict[str, tuple[int, float]]:
    """(depth, row) of every node: leaves one row apart in the order written, a parent centred on
    its children."""
    place: dict[str, tuple[int, float]] = {}
    row = [0.0]

    def visit(node_id: str, depth: int) -> float:
        node = plan.nodes[node_id]
        ys = [visit(child, depth + 1) for _, child in node.children]
        if ys:
            y = sum(ys) / len(ys)
        else:
            y = row[0]
            row[0] += 1
        place[node_id] = (depth, y)
        return y

    visit(ROOT, 0)
    return place


def flow_frames(plan: Plan, counts: dict[str, dict],
                actions: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The nodes and edges of the flow chart, with people per node and per edge."""
    place = _layout(plan)
    failed = {a["node"] for a in actions if a["status"] in ("failed", "stopped", "cancelled")}
    nodes, edges = [], []
    for node in plan.nodes.values():
        c = counts.get(node.id, {"reached": 0, "waiting": 0, "held_out": 0, "branches": {}})
        status = ("failed" if node.id in failed else "waiting" if c["waiting"] else
                  "reached" if c["reached"] else "not reached")
        x, y = place[node.id]
        label = node.id if node.kind in ("start", node.id.rsplit("_", 1)[0]) else f"{node.id} ({node.kind})"
        nodes.append({"node": node.id, "kind": node.kind, "x": x, "y": y, "reached": c["reached"],
                      "waiting": c["waiting"], "held_out": c["held_out"], "status": status,
                      "label": f"{label}: {c['reached']:,}"})
        for branch, child in node.children:
            people = counts.get(child, {}).get("reached", 0)
            cx, cy = place[child]
            edges.append({"from": node.id, "to": child, "branch": "" if branch == "next" else branch,
                          "x": x, "y": y, "x2": cx, "y2": cy, "people": people,
                          "mx": (x + cx) / 2, "my": (y + cy) / 2,
                          "edge_label": (f"{branch}: " if branch != "next" else "") + f"{people:,}"})
    return pd.DataFrame(nodes), pd.DataFrame(edges)


def flow_chart(plan: Plan, counts: dict[str, dict], actions: list[dict],
               title: str | None = None) -> alt.Chart:
    nodes, edges = flow_frames(plan, counts, actions)
    rows = max(int(nodes["y"].max()) + 1, 1)
    width = 170 * (int(nodes["x"].max()) + 1)
    height = max(60 * rows, 120)
    x = alt.X("x:Q", axis=None, scale=alt.Scale(domain=[-0.3, float(nodes["x"].max()) + 0.8]))
    y = alt.Y("y:Q", axis=None, scale=alt.Scale(domain=[float(nodes["y"].max()) + 0.6, -0.6]))
    top = max(int(edges["people"].max()) if len(edges) else 1, 1)
    layers = []
    if len(edges):
        base = alt.Chart(edges)
        layers.append(base.mark_rule(color="#868e96", opacity=0.6).encode(
            x=x, y=y, x2="x2:Q", y2="y2:Q",
            strokeWidth=alt.StrokeWidth("people:Q", scale=alt.Scale(domain=[0, top], range=[1, 12]),
                                        legend=None),
            tooltip=["from", "to", "branch", alt.Tooltip("people:Q", format=",")]))
        layers.append(base.mark_text(fontSize=10, dy=-7, color="#495057").encode(
            x=alt.X("mx:Q", axis=None), y=alt.Y("my:Q", axis=None), text="edge_label:N"))
    base = alt.Chart(nodes)
    layers.append(base.mark_square(size=260).encode(
        x=x, y=y,
        color=alt.Color("status:N", scale=alt.Scale(domain=list(COLOURS), range=list(COLOURS.values())),
                        legend=alt.Legend(title=None, orient="bottom")),
        tooltip=["node", "kind", alt.Tooltip("reached:Q", format=","), alt.Tooltip("waiting:Q", format=","),
                 alt.Tooltip("held_out:Q", format=","), "status"]))
    layers.append(base.mark_text(align="left", dx=12, fontSize=11).encode(x=x, y=y, text="label:N"))
    return alt.layer(*layers).properties(width=width, height=height,
                                         title=title or f"{plan.name}: people per step")


def funnel_chart(actions: list[dict]) -> alt.Chart | None:
    """Per send: planned, suppressed, capped, skipped, sent, failed, held out."""
    sends = [a for a in actions if a["kind"] == "send"]
    if not sends:
        return None
    stages = ("held_out", "suppressed", "capped", "skipped", "sent", "failed")
    totals: dict[tuple[str, str], int] = {}
    for a in sends:
        for s in stages:
            totals[(a["node"], s)] = totals.get((a["node"], s), 0) + int(a.get(s) or 0)
    df = pd.DataFrame([{"step": n, "stage": s, "people": v} for (n, s), v in totals.items()])
    return alt.Chart(df, title="sends: what became of each step's people").mark_bar().encode(
        y=alt.Y("step:N", title=None), x=alt.X("people:Q", stack="zero"),
        color=alt.Color("stage:N", sort=list(stages)), order=alt.Order("stage_order:Q"),
        tooltip=["step", "stage", alt.Tooltip("people:Q", format=",")]).transform_calculate(
        stage_order=f"indexof({list(stages)}, datum.stage)").properties(width=520)


def lift_chart(result: Lift) -> alt.Chart:
    rows = []
    for a in [result.overall, *result.arms]:
        low, high = a.interval
        rows.append({"group": a.name, "lift": a.lift * 100, "low": low * 100, "high": high * 100,
                     "significant": "significant" if a.significant else "not significant"})
    df = pd.DataFrame(rows)
    base = alt.Chart(df, title=f"lift on {result.goal} (points, 95 % CI)")
    return alt.layer(
        base.mark_rule(strokeWidth=2).encode(y=alt.Y("group:N", title=None), x=alt.X("low:Q", title="points"),
                                             x2="high:Q"),
        base.mark_point(filled=True, size=80).encode(
            y="group:N", x="lift:Q", color=alt.Color("significant:N", scale=alt.Scale(
                domain=["significant", "not significant"], range=["#2f9e44", "#868e96"]))),
        alt.Chart(pd.DataFrame({"zero": [0]})).mark_rule(strokeDash=[4, 4], color="#495057").encode(
            x="zero:Q"),
    ).properties(width=520)


def journey_page(wh: Warehouse, plan: Plan, row: dict | None, simulated: bool = False) -> Page:
    name = plan.name
    counts = engine.node_counts(wh, name)
    acts = engine.actions(wh, name)
    status = "simulated" if simulated else (row["status"] if row else "not started")
    page = Page(f"Journey {name}" + (" (simulated)" if simulated else ""),
                f"{plan.journey.description.strip()} — status: {status}")
    cyc = engine.cycles(wh, name)
    entered = sum(c["entered"] for c in cyc)
    page.metrics({"status": status, "cycles": f"{len(cyc):,}", "entered": f"{entered:,}",
                  "held out": f"{sum(c['held_out'] for c in cyc):,}",
                  "sent": f"{sum(int(a.get('sent') or 0) for a in acts):,}",
                  "inside now": f"{sum(c['waiting'] for c in counts.values()):,}"})
    page.heading("The flow")
    page.note("Each square is a step: grey not reached, green reached, blue people waiting there, red a "
              "failed send. Edges carry the people who went that way.")
    page.chart(flow_chart(plan, counts, acts))
    if acts:
        page.heading("Actions (sub-tasks)")
        page.chart(funnel_chart(acts))
        df = pd.DataFrame(acts)[["cycle", "node", "kind", "destination", "status", "people", "held_out",
                                 "sent", "failed", "suppressed", "capped", "skipped"]]
        page.table(df)
    result = lift(wh, plan)
    if result is not None:
        page.heading("Holdout and lift")
        page.note(f"Goal: {result.goal}. Held-out people go through the journey but are sent nothing.")
        page.chart(lift_chart(result))
        page.table(pd.DataFrame([{"group": a.name, "treated": a.treated, "treated conversion": a.treated_rate,
                                  "held out": a.held_out, "held-out conversion": a.held_out_rate,
                                  "lift (points)": a.lift * 100, "verdict": a.verdict()}
                                 for a in [result.overall, *result.arms]]),
                   {"treated conversion": ".1%", "held-out conversion": ".1%", "lift (points)": "+.1f"})
    if cyc:
        page.heading("Cycles")
        page.table(pd.DataFrame(cyc))
    return page
