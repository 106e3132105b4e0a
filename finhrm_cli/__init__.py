"""finhrm: a Hierarchical Reasoning Model for next-session high/low forecasts."""

__version__ = "0.1.0"
