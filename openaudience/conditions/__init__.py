"""The condition language: one schema, one set of operators, one sqlglot compiler, used by
audiences, AIPL rules and product pools (docs/conditions.md).

- `leaves`: the registry of condition kinds and the kinds every domain shares (tag, behavior);
- `tree`: the groups (all, any, not), a domain's model (`condition_model`), compiling,
  describing and checking a tree;
- `operators`: the tag operators by tag type;
- `context`: what compiling needs (relations, tag types, today as a date or a column);
- `deprecations`: old spellings, rewritten with a message naming file and line;
- `files`: validating conditions read from YAML with errors at their lines;
- `aipl`: the AIPL rules, compiled into dbt macros (`oa aipl compile`).

It imports only openaudience.core, so that the models (ml) can use it."""

from openaudience.conditions.context import Context, Relations, Requirement
from openaudience.conditions.deprecations import DEPRECATIONS, Rewritten, modernize
from openaudience.conditions.files import reporter, validate_rewritten
from openaudience.conditions.leaves import LEAVES, BehaviorLeaf, Leaf, Strict, TagLeaf, Threshold, Window
from openaudience.conditions.operators import ALL_TAG_OPS, DEPRECATED_OPS, OPS_BY_TYPE
from openaudience.conditions.sql import DIALECTS, to_sql
from openaudience.conditions.tree import (
    ConditionNode,
    check_condition,
    compile_condition,
    condition_model,
    describe,
)

__all__ = ["ALL_TAG_OPS", "DEPRECATED_OPS", "DEPRECATIONS", "DIALECTS", "LEAVES", "OPS_BY_TYPE",
           "BehaviorLeaf", "ConditionNode", "Context", "Leaf", "Relations", "Requirement", "Rewritten",
           "Strict", "TagLeaf", "Threshold", "Window", "check_condition", "compile_condition",
           "condition_model", "describe", "modernize", "reporter", "to_sql", "validate_rewritten"]
