"""What the dbt project declares: RFM models, AIPL models and the relations they live in."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from openaudience.core.errors import UserError
from openaudience.core.warehouse import Warehouse, qualified


@dataclass(frozen=True)
class RfmModel:
    name: str
    relation: str
    input: str
    window_days: int | None
    comparison: dict[str, Any]
    breakpoints: dict[str, list[float]]


@dataclass(frozen=True)
class AiplModel:
    name: str
    description: str
    relation: str  # aipl_daily, shared by every AIPL model
    rules: dict[str, Any] = field(default_factory=dict)


@dataclass
class Catalog:
    manifest: dict[str, Any]

    @classmethod
    def load(cls) -> Catalog:
        from openaudience.core.dbt import ensure_manifest

        return cls(json.loads(ensure_manifest().read_text()))

    def _models(self) -> list[dict[str, Any]]:
        return [n for n in self.manifest["nodes"].values()
                if n["resource_type"] in ("model", "seed") and n["package_name"] == "openaudience"]

    def relation(self, name: str) -> str:
        for node in self._models():
            if node["name"] == name:
                return qualified(node["schema"], node["alias"])
        raise UserError(f"the dbt project has no model or seed named {name!r}")

    def rfm_models(self) -> dict[str, RfmModel]:
        found = {}
        for node in self._models():
            cfg = (node["config"].get("meta") or {}).get("rfm")
            if node["resource_type"] == "model" and isinstance(cfg, dict):
                found[node["name"]] = RfmModel(
                    name=node["name"], relation=qualified(node["schema"], node["alias"]),
                    input=cfg.get("input", ""), window_days=cfg.get("window_days"),
                    comparison=cfg.get("comparison") or {},
                    breakpoints={k: cfg.get(k) for k in ("recency_days", "frequency", "monetary")})
        return dict(sorted(found.items()))

    def rfm_model(self, name: str) -> RfmModel:
        return _pick(self.rfm_models(), name, "RFM", "models/marts/rfm/_rfm__models.yml")

    def aipl_models(self) -> dict[str, AiplModel]:
        found = {}
        for node in self._models():
            cfg = (node["config"].get("meta") or {}).get("aipl")
            if node["name"] == "aipl_daily" and isinstance(cfg, dict):
                relation = qualified(node["schema"], node["alias"])
                for entry in cfg.get("models") or []:
                    found[entry["name"]] = AiplModel(entry["name"], entry.get("description", ""),
                                                     relation, entry.get("stages") or {})
        return found

    def aipl_model(self, name: str) -> AiplModel:
        return _pick(self.aipl_models(), name, "AIPL", "models/marts/aipl/_aipl__models.yml")


def _pick(models: dict[str, Any], name: str, kind: str, where: str) -> Any:
    if name not in models:
        known = ", ".join(models) or "none"
        raise UserError(f"no {kind} model named {name!r} (declared: {known}); {kind} models are "
                        f"declared in {where}")
    return models[name]


def require_table(warehouse: Warehouse, relation: str, what: str) -> None:
    schema, table = (part.strip('"') for part in relation.split(".", 1))
    if not warehouse.table_exists(schema, table):
        raise UserError(f"{what} ({relation}) is not built yet; run `oa build` or `make demo` first")


def sql_date(value: Any) -> str:
    """A date literal both engines read the same way."""
    return f"cast('{value.isoformat()}' as date)"
