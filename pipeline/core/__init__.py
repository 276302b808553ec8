"""The online core: one record in, outputs and state changes out, deterministic.

Decoding (:mod:`~pipeline.core.events`), de-duplication, per-user state and its stored
format, event-time timers, features, the output records and their registry, and the
:class:`~pipeline.core.processor.Processor` that runs them in order. No Kafka, no Faust,
no wall clock in a decision.
"""
