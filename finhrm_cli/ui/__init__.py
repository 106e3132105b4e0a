"""Everything the user sees, drawn with rich; import from the submodule that owns a name.

``console``   the stdout/stderr consoles, error/warning/note lines, JSON, number formats
``progress``  the training progress bar (the engine's callback)
``views``     each command's tables and charts
``export``    predict's forecasts as CSV or JSON, to a file or stdout
"""
