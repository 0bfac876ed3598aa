"""``python -m core train --data DIR --out models/NAME [options]``: train a U-Net and write its model folder."""

from __future__ import annotations

import argparse

from core.cli.common import print_json
from core.config import MODALITIES
from core.errors import BratsViewerError


def _channels(text: str) -> tuple[str, ...]:
    chans = tuple(c.strip().lower() for c in text.split(",") if c.strip())
    bad = [c for c in chans if c not in MODALITIES]
    if not chans or bad:
        raise argparse.ArgumentTypeError(f"expected comma-separated modalities among {MODALITIES}, got {text!r}")
    return chans


def _split(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected three fractions like 0.7,0.15,0.15, got {text!r}") from err
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three fractions like 0.7,0.15,0.15, got {text!r}")
    return parts  # type: ignore[return-value]


def _ids(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a 2D U-Net on labelled BraTS cases")
    p.add_argument("--data", required=True, help="folder of labelled BraTS cases")
    p.add_argument("--out", required=True, help="output model folder, e.g. models/NAME")
    p.add_argument("--channels", type=_channels, default=("flair", "t1ce"), help="e.g. flair,t1ce (design default)")
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--normalisation", choices=("slice_max", "zscore_brain", "robust_brain"), default="slice_max")
    p.add_argument("--crop", choices=("none", "brain_bbox"), default="none")
    p.add_argument("--base-filters", type=int, default=32)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--loss", choices=("ce", "ce_dice"), default="ce")
    p.add_argument("--split", type=_split, default=(0.7, 0.15, 0.15), help="train,val,test fractions by case")
    p.add_argument("--val-cases", type=_ids, default=(), help="comma-separated case ids held out for validation")
    p.add_argument("--test-cases", type=_ids, default=(), help="comma-separated case ids held out for testing")
    p.add_argument("--exclude-cases", type=_ids, default=())
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--tumour-repeat", type=int, default=1, help="extra copies of tumour slices per epoch")
    p.add_argument("--bias-field", type=float, default=0.0,
                   help="strength of random smooth intensity fields in augmentation (0: off; 0.3: +-30%%)")
    p.add_argument("--patience", type=int, default=6, help="early-stopping patience in epochs")
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop after this wall time (0: no limit)")
    p.add_argument("--steps-per-epoch", type=int, default=0, help="cap batches per epoch (0: all)")
    p.add_argument("--context", type=int, default=0, help="neighbouring slices each side as channels (2.5-D)")
    p.add_argument("--modality-dropout", type=float, default=0.0,
                   help="per-sample probability of zero-filling some modalities (trains for missing sequences)")
    p.add_argument("--strong-augment", action="store_true",
                   help="gamma, contrast, noise, blur and low-resolution intensity augmentation")
    p.add_argument("--postprocess", default="",
                   help="post-processing saved with the model, e.g. decoding=regions,min_island_ml=2,keep_within_mm=10")
    p.add_argument("--cache-dir", default="", help="slice cache folder shared by runs (default: OUT/cache)")
    p.add_argument("--no-export", action="store_true",
                   help="skip the ONNX export at the end (inference then needs TensorFlow)")
    p.add_argument("--resume", action="store_true", help="continue from the output folder's last checkpoint")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from core.engine.training import TrainConfig, train

    if args.epochs < 1 or args.batch_size < 1 or args.base_filters < 1 or not 1 <= args.depth <= 6:
        raise BratsViewerError("expected epochs, batch size and base filters >= 1 and depth in 1..6")
    cfg = TrainConfig(
        data_dir=args.data, out_dir=args.out, channels=args.channels, input_size=args.input_size,
        normalisation=args.normalisation, crop=args.crop, base_filters=args.base_filters, depth=args.depth,
        dropout=args.dropout, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        loss=args.loss, split=args.split, val_cases=args.val_cases, test_cases=args.test_cases,
        exclude_cases=args.exclude_cases, seed=args.seed, augment=not args.no_augment,
        tumour_repeat=args.tumour_repeat, bias_field=args.bias_field, early_stopping_patience=args.patience, max_minutes=args.max_minutes,
        resume=args.resume, steps_per_epoch=args.steps_per_epoch, cache_dir=args.cache_dir,
        context=args.context, modality_dropout=args.modality_dropout, strong_augment=args.strong_augment,
        postprocess=args.postprocess, export_onnx=not args.no_export,
    )
    card = train(cfg)
    if card:
        print_json({k: card[k] for k in ("name", "epochs_run", "validation_mean_dice", "test_mean_dice",
                                         "weights_sha256", "total_wall_time_s")})
    return 0
