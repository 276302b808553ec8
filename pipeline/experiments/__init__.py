"""A/B experiments: definitions, deterministic assignment and always-valid statistics.

Pure Python, numpy and scipy, no Kafka: :func:`parse_definition` checks a definition against
``schemas/experiment.schema.json`` and the rules beyond it, :class:`ExperimentRegistry`
refuses changes to a running experiment, :func:`assign` gives each user a sticky variant
(GrowthBook-compatible hashing), and :class:`SequentialTest` and :class:`SampleRatioTest`
judge an experiment at every look without inflating its error rate by peeking.
"""

from pipeline.experiments.assignment import assign
from pipeline.experiments.definition import DefinitionRefused, Experiment, parse_definition
from pipeline.experiments.registry import ExperimentRegistry
from pipeline.experiments.stats import Moments, SampleRatioTest, SequentialTest

__all__ = [
    "DefinitionRefused",
    "Experiment",
    "ExperimentRegistry",
    "Moments",
    "SampleRatioTest",
    "SequentialTest",
    "assign",
    "parse_definition",
]
