"""Dagster resources: configurable classes whose settings come from the environment."""

from __future__ import annotations

import os

import dagster as dg

from orchestration.settings import load_settings
from orchestration.warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The configured warehouse (OA_TARGET and friends, read when a run starts).

    ``target`` overrides OA_TARGET for this deployment; leave it empty to follow the environment.
    """

    target: str = ""

    def get(self) -> Warehouse:
        settings = load_settings()
        if self.target and self.target != settings.target:
            settings = load_settings(dict(os.environ, OA_TARGET=self.target))
        return Warehouse(settings)
