"""MLflow for the stages: ``client`` (runs, tags, run pointers; what the stages import) and ``server``
(the tracking side-process that loads MLflow while a stage imports torch)."""
