"""The training contract's runner and the built-in trainer.

Public: `ctloop.trainer.train.train` (snapshot in, logged and smoke-tested model out: what the workflow's
train step calls), `ctloop.trainer.evaluate` (challenger and champion scored on the same holdout),
`ctloop.trainer.validation.validate` (a snapshot against the spec's data schema) and the built-in tabular MLP
trainer `ctloop.trainer.mlp:train`, and `ctloop.trainer.version` (the trainer's code version in run keys and
lineage; light enough for the sensor). User code writes against `ctloop.TrainContext`/`TrainResult` instead.
Private: `loop`, `model`, `pyfunc`, `lineage`, `split`, `labels`, `metrics`, `distributed`.
"""
