"""``linstab train``."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch

from ..training.loop import DEFAULT_CHECKPOINT_SECONDS, export_checkpoint, train
from ..training.optim import DEFAULT_BATCH_SIZE, DEFAULT_LR, DEFAULT_WARMUP, DEFAULT_WEIGHT_DECAY, SCHEDULES
from ..training.precision import PRECISIONS
from . import common


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--depth", type=int, default=20, help="depth 6n+2 (default 20)")
    parser.add_argument("--shortcut", choices=("A", "B"), default="B", help="default B")
    parser.add_argument(
        "--data",
        default=os.environ.get("LINSTAB_CIFAR10_JPEG"),
        help="folder with train.zip/test.zip (default $LINSTAB_CIFAR10_JPEG)",
    )
    parser.add_argument("--epochs", type=int, required=True, help="training epochs")
    parser.add_argument(
        "--out", type=common.out_file, required=True, help="output .safetensors file (+ .json)"
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--lr", type=float, default=DEFAULT_LR, help="peak one-cycle LR; the constant LR of --schedule swa"
    )
    parser.add_argument("--weight-decay", type=float, default=DEFAULT_WEIGHT_DECAY)
    parser.add_argument(
        "--warmup", type=float, default=None, help=f"warm-up fraction of one-cycle (default {DEFAULT_WARMUP})"
    )
    parser.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default="one-cycle",
        help="one-cycle (default), or swa: stochastic weight averaging at the constant --lr around "
        "the trained --init model (the end-of-epoch weights averaged, batch-norm statistics recomputed)",
    )
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use only N training images")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    parser.add_argument("--init", default=None, help="warm start from this .safetensors model (new schedule)")
    parser.add_argument(
        "--checkpoint",
        type=common.out_file,
        default=None,
        help="resumable checkpoint (default <out stem>.ckpt.pt)",
    )
    parser.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=DEFAULT_CHECKPOINT_SECONDS / 60.0,
        help=f"also save the checkpoint within an epoch every M minutes (default "
        f"{DEFAULT_CHECKPOINT_SECONDS / 60.0:g}; 0: at epoch ends only); --resume continues at that step",
    )
    parser.add_argument("--name", default=None, help="registry name (default: out's stem)")
    parser.add_argument("--stop-after", type=int, default=None, help="stop after N epochs in this run")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-channels-last", action="store_true", help="keep the default NCHW memory format")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="training precision (auto: bf16 on CUDA and CPUs with native bf16, else float32)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the training model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    """Run :func:`train` from parsed command-line arguments; returns the exit status."""
    if args.data is None:
        raise ValueError(
            "no data folder: pass --data DIR or set LINSTAB_CIFAR10_JPEG to the folder holding "
            "train.zip and test.zip"
        )
    if not Path(args.data).expanduser().is_dir():
        raise ValueError(f"--data {args.data}: no such directory")
    if args.schedule == "swa" and args.warmup is not None:
        raise ValueError("--warmup belongs to the one-cycle schedule; --schedule swa keeps --lr constant")
    minutes = args.checkpoint_minutes
    if not (math.isfinite(minutes) and minutes >= 0):
        raise ValueError(f"--checkpoint-minutes must be a finite number >= 0; got {minutes}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1; got {args.threads}")
        torch.set_num_threads(args.threads)
    summary = train(
        args.depth,
        args.shortcut,
        args.data,
        args.epochs,
        args.out,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        limit=args.limit,
        resume=args.resume,
        init=args.init,
        device=args.device,
        progress=not args.no_progress,
        weight_decay=args.weight_decay,
        warmup=DEFAULT_WARMUP if args.warmup is None else args.warmup,
        schedule=args.schedule,
        label_smoothing=args.label_smoothing,
        checkpoint=args.checkpoint,
        name=args.name,
        stop_after=args.stop_after,
        channels_last=not args.no_channels_last,
        precision=args.precision,
        compile=args.compile,
        checkpoint_seconds=60.0 * minutes if minutes > 0 else None,
        log=lambda msg: print(msg, flush=True),
    )
    if summary["stopped_by"] is not None:  # SIGTERM / Ctrl-C: saved, ends as the signal would
        return summary["exit_status"]
    return 0 if summary["completed"] or args.stop_after is not None else 1


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand (and ``snapshot``) on an ``argparse`` subparsers object.

    Args:
        subparsers: the result of ``parser.add_subparsers()``.

    Returns:
        The new sub-parser; its ``func`` default is :func:`run_cli`.
    """
    parser = subparsers.add_parser(
        "train",
        help="train a CIFAR ResNet on the JPEG CIFAR-10 set",
        description=__doc__.split("\n\n")[0],
    )
    _configure(parser)
    add_snapshot_parser(subparsers)
    return parser


def run_snapshot(args: argparse.Namespace) -> int:
    """``linstab snapshot``: a training checkpoint's model as a model file."""
    side = export_checkpoint(args.checkpoint, args.out, name=args.name)
    print(
        f"wrote {args.out} and its sidecar: {side['model']}, {side['note']}; "
        f"SHA-256 {side['registry']['sha256']}"
    )
    return 0


def add_snapshot_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``snapshot`` subcommand (a running training's model, for analysis)."""
    parser = subparsers.add_parser(
        "snapshot",
        help="write the model of a training checkpoint as a model file (analyse a run in progress)",
        description="Write the model of a `linstab train` checkpoint as .safetensors + JSON sidecar "
        "(marked unfinished), usable as --model FILE by every command. The checkpoint is only read.",
    )
    parser.add_argument("checkpoint", help="the training checkpoint (*.ckpt.pt)")
    parser.add_argument(
        "--out", type=common.out_file, required=True, help="output .safetensors file (+ .json)"
    )
    parser.add_argument("--name", default=None, help="model name in the sidecar (default: out's stem)")
    parser.set_defaults(func=run_snapshot)
    return parser
