"""Training: the step (``step``: the Trainer and its losses), ACT halting targets (``halting``)
and the loop over epochs with validation and checkpoints (``loop``)."""
