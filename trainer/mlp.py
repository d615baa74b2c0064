"""The built-in trainer: ctloop's tabular MLP, written on the same public contract as any user's trainer.

Its hyperparameters are the spec's `train` section (hidden, epochs, batch_size, lr, weight_decay,
patience), overridable through `params`. Deterministic for a seed, data-parallel under torchrun,
bf16 autocast on CUDA, per-epoch checkpoints and early stopping on the validation loss.
"""

from __future__ import annotations

import hashlib
import json

from ctloop.modelspec import TrainParams
from ctloop.trainer import distributed
from ctloop.trainer.loop import Tensors, deterministic, fit
from ctloop.trainer.model import Encoder, TabularModel, build_module
from ctloop.trainer.pyfunc import BUNDLE, TabularPyfunc
from ctloop.training import TrainContext, TrainResult

REFERENCE = "ctloop.trainer.mlp:train"


def train(ctx: TrainContext) -> TrainResult:
    if ctx.train is None or ctx.validation is None:
        raise ValueError("the built-in MLP trains on tables; a files dataset needs its own trainer (spec 'trainer')")
    params = TrainParams.model_validate({k: v for k, v in ctx.params.items() if k in TrainParams.model_fields})
    schema = ctx.schema
    dist = distributed.DistContext(ctx.world_size, ctx.rank, active=ctx.world_size > 1)
    with deterministic(ctx.seed):
        encoder = Encoder.fit(ctx.train, schema)
        module = build_module(encoder, params.hidden).to(ctx.device)
        wrapped = distributed.wrap(module, dist, ctx.device)
        fingerprint = hashlib.sha256(
            f"{ctx.data_digest}\n{schema.model_dump_json()}\n{json.dumps(dict(ctx.params), sort_keys=True)}".encode()
        ).hexdigest()
        train, val = _tensors(encoder, ctx.train, schema.label), _tensors(encoder, ctx.validation, schema.label)
        fitted = fit(wrapped, train, val, params, schema.task, device=ctx.device, ctx=dist,
                     checkpoint_dir=ctx.checkpoint_dir, fingerprint=fingerprint)
    for h in fitted.history:
        ctx.log_metrics({"train_loss": h.train_loss, "val_loss": h.val_loss}, step=h.epoch)
    bundle = ctx.output_dir / BUNDLE
    TabularModel(encoder, params.hidden, module.cpu().eval()).save(bundle)
    return TrainResult(
        model=TabularPyfunc(),
        input_example=ctx.train[schema.feature_names].head(5).reset_index(drop=True),
        artifacts={BUNDLE: bundle},
        predict_params={"output": "label"},
        metrics={"best_val_loss": fitted.best_val_loss, "best_epoch": fitted.best_epoch,
                 "epochs": fitted.epochs_run},
    )


def _tensors(encoder: Encoder, frame, label: str) -> Tensors:
    x_num, x_cat = encoder.features(frame)
    return Tensors(x_num, x_cat, encoder.targets(frame[label]))
