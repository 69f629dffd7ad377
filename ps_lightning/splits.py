"""Names of the data splits that the datamodule serves and the models score, in one place that
both import (a model must not depend on the datamodule for them)."""

# The order of the test loaders (validation: the first three, with a retain subset);
# `dataloader_idx` indexes this tuple. Calibration is the held-out half of the test set.
EVAL_SPLITS = ("forget", "retain", "test", "calibration")
