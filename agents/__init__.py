"""Kafka-facing side of ottscore: the Faust worker, the broker, producers and the CLI."""
