"""The production worker: the Faust app, its Kafka helpers, snapshots, health, metrics.

Nothing here imports :mod:`agents.devtools`.
"""
