"""Command line: ``python -m models train|evaluate ...``.

    python -m models train --kind dcn --train train.parquet --valid valid.parquet \\
        --config configs/model.yaml --out runs/dcn [--warm-start CKPT] [--seed N] [--no-resume]
    python -m models evaluate --checkpoint runs/dcn --data test.parquet [--truth truth.parquet]

The feature service schema comes from ``--schema`` (a JSON object feature -> Feast type), else
from ``schema.json`` next to the train file, else it is inferred from the parquet dtypes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from models.schema import TRAINING_FRAME_COLUMNS as ENTITY_COLUMNS

log = logging.getLogger("models")


def _read_frame(path: str) -> pd.DataFrame:
    file = Path(path)
    if not file.exists():
        raise SystemExit(f"error: {file}: no such file")
    return pd.read_parquet(file)


def _schema(args: argparse.Namespace, train: pd.DataFrame, label: str) -> dict[str, str]:
    candidates = [Path(args.schema)] if args.schema else [Path(args.train).parent / "schema.json"]
    for file in candidates:
        if file.is_file():
            data = json.loads(file.read_text())
            if not isinstance(data, dict):
                raise SystemExit(f"error: {file}: expected a JSON object feature -> Feast type")
            return {str(k): str(v) for k, v in data.items()}
        if args.schema:
            raise SystemExit(f"error: {file}: no such schema file")
    from models.spec import infer_schema

    log.warning("no schema.json: inferring the feature schema from the parquet dtypes")
    return infer_schema(train, exclude=(*ENTITY_COLUMNS, label))


def _overrides(pairs: list[str]) -> dict[str, Any]:
    from models.yaml_config import parse_overrides

    try:
        return parse_overrides(pairs)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None


def cmd_train(args: argparse.Namespace) -> int:
    from models.config import load_model_config
    from models.train import RunOptions, train_model

    config = load_model_config(args.config, _overrides(args.set))
    train = _read_frame(args.train)
    valid = _read_frame(args.valid)
    schema = _schema(args, train, config.features.label)
    result = train_model(
        args.kind,
        train,
        valid,
        schema,
        config,
        RunOptions(
            checkpoint_dir=Path(args.out),
            warm_start_from=Path(args.warm_start) if args.warm_start else None,
            resume=not args.no_resume,
            seed=args.seed,
        ),
    )
    summary = result.to_dict()
    (Path(args.out) / "result.json").write_text(json.dumps(summary, indent=1, default=float))
    if result.warm_start_report is not None:
        print(result.warm_start_report.summary(), file=sys.stderr)
    print(
        json.dumps({k: summary[k] for k in ("kind", "best_metrics", "checkpoint_path")}, indent=1)
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from models.metrics import evaluate
    from models.scoring import Scorer

    scorer = Scorer.from_checkpoint(args.checkpoint)
    data = _read_frame(args.data)
    truth = None
    if args.truth:
        truth_df = _read_frame(args.truth)
        truth = truth_df.set_index("event_id")["p_click"]
    metrics = evaluate(scorer, data, scorer.spec, truth=truth, segment_col=args.segment_col)
    print(json.dumps(metrics, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train Wide & Deep or DCN (resumes a run found in --out)")
    train.add_argument("--kind", choices=["wide_deep", "dcn"], required=True)
    train.add_argument("--train", required=True, help="train split (parquet)")
    train.add_argument("--valid", required=True, help="validation split (parquet)")
    train.add_argument("--config", default="configs/model.yaml", help="model config YAML")
    train.add_argument("--out", required=True, help="run folder: checkpoints and result.json")
    train.add_argument("--warm-start", help="production checkpoint (or run folder) to start from")
    train.add_argument("--schema", help="JSON feature -> Feast value type (default: schema.json)")
    train.add_argument("--seed", type=int, help="overrides training.seed")
    train.add_argument("--no-resume", action="store_true", help="discard a run found in --out")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="metrics of a checkpoint on a labelled parquet file")
    ev.add_argument("--checkpoint", required=True, help="checkpoint or run folder")
    ev.add_argument("--data", required=True, help="labelled rows (parquet)")
    ev.add_argument("--truth", help="parquet with event_id, p_click (simulated data)")
    ev.add_argument("--segment-col", help="also AUC per value of this column")
    ev.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from models.checkpoint import CheckpointError
    from models.config import ModelConfigError
    from models.spec import FeatureSpecError

    try:
        return int(args.func(args))
    except (ModelConfigError, FeatureSpecError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
