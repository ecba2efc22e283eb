"""Lightning callbacks that ``fit`` uses and another project can add to its own ``Trainer``: atomic and best
checkpoints and a clean stop on SIGTERM (``checkpoints``), the dataset's TensorBoard dashboards (``dashboards``)."""
