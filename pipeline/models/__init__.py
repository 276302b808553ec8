"""The online-learning models of a partition: churn, segments and recommendations.

:class:`~pipeline.models.partition.PartitionModels` holds one partition's models; each
family lives in a module of its own (``churn``, ``segments``, ``reco/``), and
``quality`` measures them prequentially.
"""
