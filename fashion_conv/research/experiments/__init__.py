"""Experiments that answer the notebook's questions with measured evidence, written up as one report.

    python -m fashion_conv.research.experiments --preset quick --out reports/quick

``plans`` says what each experiment trains, ``runs`` trains and tests one model with one seed through ``fit.run``,
``probes`` shifts test images, ``suite`` runs a plan through ``studies.spread``, ``sections``/``stats``/``plots``/
``report`` turn the results into the report.
"""
