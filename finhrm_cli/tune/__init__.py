"""``finhrm tune``: a search over the training settings with Optuna (the optional extra
``finhrm[tune]``).  ``space``: the search space; ``study``: Optuna's study, sampler, pruner and
storage; ``events``: what the search reports to the progress display.  The command itself is
``service.tuning``."""
