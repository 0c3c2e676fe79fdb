"""The ``wganlab`` command: train, and the subcommands the other floors provide."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

from .config import ConfigError, load_config


def _train(args: argparse.Namespace) -> int:
    from .data import DataError
    from .train import Trainer, TrainingError

    config = load_config(args.config, args.set)
    out = Path(args.out) if args.out else Path("runs") / _default_name(args.config, config)
    if args.device:
        config.train.device = args.device
    trainer = Trainer(config, out)
    print(f"wganlab: training {config.model.name} on {config.data.name} with "
          f"constraint {trainer.constraint.name} -> {out}", file=sys.stderr)
    record = trainer.run()
    w = record.get("w_estimate")
    print(f"wganlab: done at generator step {trainer.generator_step} "
          f"(critic step {trainer.critic_step}, {trainer.clock.wall():.1f} s"
          + (f", W estimate {w:.4g}" if w is not None else "") + f"); outputs in {out}",
          file=sys.stderr)
    return 0


def _default_name(config_path: Optional[str], config) -> str:
    import time
    stem = Path(config_path).stem if config_path else "run"
    return f"{stem}-{config.constraint.name}-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wganlab", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one WGAN run")
    t.add_argument("--config", "-c", help="YAML config file or preset name (toy, mnist_mlp, ...)")
    t.add_argument("--out", "-o", help="run directory (default runs/<config>-<constraint>-...)")
    t.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set constraint.name=gp (repeatable)")
    t.add_argument("--device", choices=["cpu", "cuda", "auto"], help="override train.device")
    t.set_defaults(func=_train)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="wganlab: %(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"wganlab: config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wganlab: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the project's own clear errors, never a deep traceback
        from .data import DataError
        from .train import TrainingError
        if isinstance(e, (DataError, TrainingError, ValueError)):
            print(f"wganlab: error: {e}", file=sys.stderr)
            return 1
        raise
