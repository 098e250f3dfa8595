"""spinetrack-tools: toolkit and active-learning annotation system for SpineTrack."""

__version__ = "0.1.0"
