"""The `dicefer` command: thin subcommands over the library. User errors print one line, no traceback."""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from .config import PRESETS, build_config
from .datasets import parse_spec
from .errors import ConfigError, UserError

EPILOG = """examples:
  dicefer train                                  # demo preset on the embedded synthetic faces (< 10 min, CPU)
  dicefer train --preset smoke --out runs/smoke  # 30-second check that everything works
  dicefer train --method supervised              # the plain cross-entropy baseline, same data and budget
  dicefer train --set stage1.epochs=10 --set mi.estimator=infonce
  dicefer evaluate --run runs/smoke
  dicefer predict --run runs/demo photos/ clip.mp4 --out faces.jsonl --annotate annotated/
  dicefer export --run runs/demo --out model.onnx && dicefer predict --onnx model.onnx "photos/*.jpg"
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicefer", description="DICE-FER: facial expression recognition with an "
                                     "identity-free expression code learned by mutual-information estimation.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train DICE-FER (Stages 1-3) or the supervised baseline, then write the report",
                       description="Train, then evaluate into RUN/report/. Settings resolve as: defaults < --preset "
                       "< --config FILE < --set/KEY=VALUE overrides; the resolved config is saved as RUN/config.yaml.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--data", metavar="SPEC", help="dataset: 'synthetic' (default) is the embedded benchmark of rendered faces")
    t.add_argument("--method", choices=("dicefer", "supervised"), help="dicefer (default) or the plain cross-entropy baseline")
    t.add_argument("--preset", choices=tuple(PRESETS), default="demo",
                   help="smoke: < 30 s, for tests; demo (default): < 10 min on 2 CPU cores; paper: the paper's settings (112x112, lr 1e-4; GPU advised)")
    t.add_argument("--config", type=Path, metavar="FILE", help="YAML file with any config values (nested as in RUN/config.yaml)")
    t.add_argument("--out", type=Path, metavar="DIR", help="run folder (default: a new folder under runs/); must not hold a run already")
    t.add_argument("--seed", type=int, help="random seed (data rendering, initialisation, pairs, augmentation)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. stage1.epochs=3 or mi.estimator=jsd (repeatable)")
    t.add_argument("overrides_positional", nargs="*", metavar="KEY=VALUE", help="same as --set")
    t.add_argument("--quiet", action="store_true", help="no progress bars")

    e = sub.add_parser("evaluate", help="write RUN/report/ again from a run's saved weights",
                       description="Rebuild a run from RUN/model.safetensors and write RUN/report/ "
                       "(report.md, report.json, confusion matrices, embedding plot).")
    e.add_argument("--run", type=Path, required=True, metavar="DIR", help="a run folder written by `dicefer train`")
    e.add_argument("--data", metavar="SPEC", help="evaluate on another dataset than the one trained on")
    add_predict_parser(sub)
    add_export_parser(sub)
    return parser


def add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="recognise expressions of the faces in images, folders or videos",
                       description="Detect faces, classify their expressions, and write one JSON line per face "
                       "(source, frame and time for video, box [x, y, w, h], label, probabilities) to stdout or --out.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--run", type=Path, metavar="DIR", help="a run folder written by `dicefer train` (PyTorch)")
    model.add_argument("--onnx", type=Path, metavar="FILE", help="a model written by `dicefer export` (onnxruntime; "
                       "pip install 'dicefer[onnx]')")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively), glob "
                   "patterns (quote them) or videos")
    p.add_argument("--detector", choices=("haar", "none", "yunet"), default="haar",
                   help="haar (default): OpenCV's Haar cascade; none: the inputs are face crops already (RAF-DB "
                   "aligned, FER2013); yunet: OpenCV's FaceDetectorYN, more robust to pose, needs --detector-model")
    p.add_argument("--detector-model", type=Path, metavar="FILE", help="YuNet model file (face_detection_yunet_*.onnx)")
    p.add_argument("--margin", type=float, metavar="F", help="grow each face box by this fraction of its side on "
                   "every side before cropping (default: 0.2 for haar, 0.15 for yunet, 0 for none)")
    p.add_argument("--every", type=int, default=10, metavar="N", help="video: analyse every N-th frame (default 10)")
    p.add_argument("--out", type=Path, metavar="FILE", help="write records to FILE (.jsonl or .csv) instead of stdout")
    p.add_argument("--annotate", type=Path, metavar="DIR", help="write copies of the images with boxes and labels to DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_export_parser(sub) -> None:
    x = sub.add_parser("export", help="write a run's expression encoder and classifier as one ONNX model",
                       description="Export the expression encoder + classifier as one ONNX graph (dynamic batch axis, "
                       "preprocessing in its metadata) and check it against PyTorch with onnxruntime. "
                       "Needs pip install 'dicefer[onnx]'.")
    x.add_argument("--run", type=Path, required=True, metavar="DIR", help="a run folder written by `dicefer train`")
    x.add_argument("--out", type=Path, required=True, metavar="FILE", help="the .onnx file to write")


def cmd_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + list(args.overrides_positional)
    for flag, key in (("data", "data.spec"), ("method", "method"), ("seed", "seed")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = build_config(args.preset, args.config, overrides)
    parse_spec(cfg.data.spec)
    out = args.out or Path("runs") / time.strftime(f"%Y%m%d-%H%M%S-{cfg.method}")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"run folder {out} already exists and is not empty; choose another --out")
    from .train import train  # torch is imported only once the arguments are known to be good

    print(f"dicefer: training {cfg.method} on {cfg.data.spec} ({args.preset} preset) into {out}", file=sys.stderr)
    report = train(cfg, out, show_progress=not args.quiet)
    print_summary(report, out)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_run

    report = evaluate_run(args.run, args.data)
    print_summary(report, args.run)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .inference import ExpressionRecognizer
    from .inference.outputs import Annotator, open_sink
    from .inference.predict import predict_inputs

    if args.every < 1:
        raise UserError("--every must be at least 1")
    options = {"detector": args.detector, "detector_model": args.detector_model, "margin": args.margin}
    recognizer = (ExpressionRecognizer.from_run(args.run, **options) if args.run
                  else ExpressionRecognizer.from_onnx(args.onnx, **options))
    annotator = Annotator(args.annotate) if args.annotate else None
    with open(args.out, "w", newline="") if args.out else nullcontext(sys.stdout) as stream:
        sink = open_sink(args.out, stream, recognizer.classes)
        summary = predict_inputs(recognizer, args.inputs, sink, annotator, args.every, show_progress=not args.quiet)
    if summary.images == 0:
        raise UserError(f"nothing could be processed: none of the {len(args.inputs)} inputs gave a readable image")
    print(f"dicefer: {summary.faces} faces in {summary.images} images"
          + (f", {summary.failed} inputs skipped" if summary.failed else ""), file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .inference.onnx_export import export_onnx

    difference = export_onnx(args.run, args.out)
    check = ("not checked: onnxruntime is not installed" if difference is None
             else f"max |onnxruntime - PyTorch| probability difference {difference:.2e}")
    print(f"dicefer: wrote {args.out} ({check})", file=sys.stderr)
    return 0


def print_summary(report: dict, run: Path) -> None:
    d = report["disentanglement"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"test accuracy {report['test']['accuracy']:.3f}  macro-F1 {report['test']['macro_f1']:.3f}  "
          f"MIG {fmt(d['mig'])}  identity probe E {fmt(d['identity_probe_accuracy_E'])} "
          f"I {fmt(d['identity_probe_accuracy_I'])} (chance {fmt(d['chance_identity'])})")
    print(f"report: {run / 'report' / 'report.md'}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export}
        return commands[args.command](args)
    except UserError as err:
        print(f"dicefer: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dicefer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
