"""Research tools, each a command and a Python API: ``experiments`` (the notebook's questions, measured),
``ingredients`` (what the strong recipe's parts are worth), ``explain`` (what the layers learn), ``robust``
(corruptions, attacks, calibration), ``bench`` (fit against a plain loop); ``spread`` runs a study's runs in parallel."""
