"""The run folder: the only owner of its file names, its config.json and its store."""
