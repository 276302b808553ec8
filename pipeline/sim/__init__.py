"""The simulator: a synthetic catalog and audience whose viewing produces the events.

Its hidden preferences never read ottscore's models; it is seeded and deterministic.
"""
