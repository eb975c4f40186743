"""Deliveries: destination files, the sync engine, its log and the suppression list."""
