"""The group node (all, any, not) over the registered leaves, one model per domain.

`condition_model` builds the pydantic model of a domain's conditions: the groups and one field
per kind the domain allows, so that pydantic's errors name the YAML location. A kind that exists
but that the domain does not allow is refused by name, with the kinds it allows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Optional

from pydantic import Field, ValidationInfo, create_model, field_validator, model_validator
from sqlglot import exp

from openaudience.conditions.context import Context
from openaudience.conditions.leaves import LEAVES, Leaf, Strict
from openaudience.conditions.sql import and_, or_

GROUPS = ("all", "any", "not")


class ConditionNode(Strict):
    """Exactly one group or leaf. Subclasses are made by condition_model."""

    domain: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _allowed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = ", ".join((*GROUPS, *cls.kinds))
            for key in data:
                if key in GROUPS or key == "not_" or key in cls.kinds:
                    continue
                if key in LEAVES:
                    raise ValueError(f"{key} conditions are not allowed in {cls.domain}; the kinds "
                                     f"allowed are {allowed}")
                raise ValueError(f"{key!r} is not a kind of condition; the kinds allowed in {cls.domain} "
                                 f"are {allowed}")
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> ConditionNode:
        given = [k for k in (*GROUPS, *self.kinds) if self.get(k) is not None]
        if len(given) != 1:
            raise ValueError("each condition is exactly one of "
                             f"{', '.join((*GROUPS, *self.kinds))}; got {', '.join(given) or 'none'}")
        return self

    @field_validator("all", "any", check_fields=False)
    @classmethod
    def _not_empty(cls, value: list | None, info: ValidationInfo) -> list | None:
        # an empty all: is true for everyone and an empty any: for no one: never what was meant
        if value == []:
            raise ValueError(f"{info.field_name}: needs at least one condition")
        return value

    def get(self, kind: str) -> Any:
        return getattr(self, "not_" if kind == "not" else kind)

    @property
    def kind(self) -> str:
        for k in (*GROUPS, *self.kinds):
            if self.get(k) is not None:
                return k
        raise AssertionError("validated condition without a kind")

    @property
    def leaf(self) -> Leaf:
        return self.get(self.kind)

    def children(self) -> list[tuple[tuple, ConditionNode]]:
        kind = self.kind
        if kind in ("all", "any"):
            return [((kind, i), child) for i, child in enumerate(self.get(kind))]
        if kind == "not":
            return [(("not",), self.not_)]
        return []

    def walk(self, path: tuple = ("where",)) -> Iterator[tuple[tuple, ConditionNode]]:
        """(path, condition) of this condition and every one below it, parents first; a path
        is the YAML location, e.g. ("where", "all", 0, "not")."""
        yield path, self
        for step, child in self.children():
            yield from child.walk((*path, *step))

    def leaves(self, kind: str) -> list:
        """Every leaf of one kind (tag, behavior, audience, upload, ...) in the tree."""
        return [c.get(kind) for _, c in self.walk() if c.kind == kind]


def condition_model(name: str, domain: str, kinds: tuple[str, ...], doc: str) -> type[ConditionNode]:
    """The model of one domain's conditions: all, any, not and the leaves of `kinds`."""
    unknown = [k for k in kinds if k not in LEAVES]
    if unknown:
        raise TypeError(f"no condition kind {', '.join(unknown)}")
    fields: dict[str, Any] = {
        "all": (Optional[list[name]], None),  # noqa: UP045 (a forward reference by name)
        "any": (Optional[list[name]], None),  # noqa: UP045
        "not_": (Annotated[Optional[name], Field(alias="not")], None),  # noqa: UP045
        **{k: (Optional[LEAVES[k]], None) for k in kinds},  # noqa: UP045
    }
    model = create_model(name, __base__=ConditionNode, __doc__=doc, __module__=__name__, **fields)
    model.domain, model.kinds = domain, tuple(kinds)
    model.model_rebuild(_types_namespace={name: model})
    return model


def compile_condition(cond: ConditionNode, ctx: Context, path: tuple = ()) -> exp.Expression:
    """A never-NULL boolean for the tree; `ctx.record`, when set, gets every node's by path."""
    kind = cond.kind
    if kind in ("all", "any"):
        parts = [compile_condition(c, ctx, (*path, *step)) for step, c in cond.children()]
        e = exp.paren(and_(parts) if kind == "all" else or_(parts))
    elif kind == "not":
        e = exp.not_(exp.paren(compile_condition(cond.not_, ctx, (*path, "not"))))
    else:
        leaf = cond.leaf
        for requirement in leaf.requirements(ctx):
            ctx.requirements[requirement] = None
        e = leaf.compile(ctx)
    if ctx.record is not None:
        ctx.record[path] = e
    return e


def describe(cond: ConditionNode) -> str:
    """A condition in one line, as `explain` prints it."""
    kind = cond.kind
    if kind in ("all", "any"):
        return f"{kind} of {len(cond.get(kind))}"
    if kind == "not":
        return "not"
    return cond.leaf.describe()


def check_condition(cond: ConditionNode, loc: tuple, env: Any, report) -> None:
    """Every leaf's checks against `env` (what the project declares); report(loc, message)."""
    for path, node in cond.walk(loc):
        if node.kind not in GROUPS:
            node.leaf.check((*path, node.kind), env, report)
