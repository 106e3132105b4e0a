"""Forecasting with a trained HRM: inference, the forecast cache (``memo``), the linear partner,
scoring against naive baselines, intervals and ACT statistics."""
