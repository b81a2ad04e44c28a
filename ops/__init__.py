"""Operator tools: the `flexsf` command (worker, gateway, tasks, relog, reconcile, search attributes)."""
