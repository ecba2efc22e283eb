"""Robustness: corruptions, adversarial attacks and calibration of trained backbones."""
