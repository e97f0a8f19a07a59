"""Ranking backbones before training (issue 15): training-free transferability scores from cached features.

:mod:`.scores` holds the math (numpy, no torch), :mod:`.plan` what a ranking will score, :mod:`.method` the run.
"""
