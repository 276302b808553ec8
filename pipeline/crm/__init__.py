"""Acting on the scores: CRM triggers with frequency caps, opt-outs and holdouts.

:mod:`~pipeline.crm.triggers` decides when a user's behaviour first meets a rule and builds
the ``ott.actions`` record; :mod:`~pipeline.crm.consent` holds the opt-outs of ``ott.consent``.
"""
