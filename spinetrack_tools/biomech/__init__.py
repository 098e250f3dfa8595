"""Biomechanical plausibility: the SpineTrack kinematic / OpenSim model, calibrated 2D rules, the deep fit."""
