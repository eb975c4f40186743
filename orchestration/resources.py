"""Dagster resources: configurable classes whose settings come from the environment."""

from __future__ import annotations

import dataclasses
import os

import dagster as dg

from openaudience.core.settings import load_settings
from openaudience.core.warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The configured warehouse (OA_TARGET and friends, read when a run starts).

    ``target`` overrides OA_TARGET for this deployment; leave it empty to follow the environment.
    """

    target: str = ""

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """A step that wrote the embedded warehouse publishes its read snapshot when it ends."""
        from openaudience.core import locks
        from openaudience.core.warehouse import publish_snapshot

        if locks.wrote():
            publish_snapshot(self.get().settings)
            locks.forget_writes()

    def get(self) -> Warehouse:
        settings = load_settings()
        if self.target and self.target != settings.target:
            settings = load_settings(dict(os.environ, OA_TARGET=self.target))
        # a scheduled run queues behind whatever holds the embedded warehouse, however long
        return Warehouse(dataclasses.replace(settings, lock_wait=None))
