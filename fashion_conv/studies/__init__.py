"""Studies: many training runs, each a normal ``fit`` run folder, spread over processes or a Ray cluster.

``experiments`` (the report on what convolution does), ``ingredients`` (what each recipe ingredient is worth),
``spread`` (run a study's independent runs sequentially, in local worker processes or on Ray).
"""
