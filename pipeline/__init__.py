"""The pipeline, one sub-package per job, in the order audio flows through them.

``config`` (the feature configuration), ``frontend`` (audio to scattergrams), ``detect`` (windows, batch runs,
the results store, exports), ``train``, ``evaluate`` and ``analysis``. See the README's architecture section.
"""
