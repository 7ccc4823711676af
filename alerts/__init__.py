"""Alerting: rules, detectors, alert state and notifiers (see the alerting issue).

Detectors read ``rollups_minute`` and the sink's ``stream_progress`` table.
"""
