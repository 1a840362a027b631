"""The `dicefer` command: thin subcommands over the library. User errors print one line, no traceback."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from dicefer.config import PRESET_SUMMARIES, DataConfig, TrainConfig, build_config, choices
from dicefer.errors import ConfigError, UserError
from dicefer.paths import output_file, output_folder

EPILOG = """examples:
  dicefer train                                  # the demo preset on the embedded synthetic faces (CPU)
  dicefer train --preset smoke --out runs/smoke  # a quick check that everything works
  dicefer train --method supervised              # the plain cross-entropy baseline, same data and budget
  dicefer train --set stage1.epochs=10 --set mi.estimator=infonce
  dicefer train --resume runs/smoke              # continue an interrupted run from its last checkpoint
  torchrun --nproc_per_node 4 -m dicefer train --preset paper --device cuda --out runs/paper
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
    t.add_argument("--data", metavar="SPEC", help="dataset: 'synthetic' (default, the embedded benchmark of rendered faces), "
                   "rafdb:PATH, fer2013:PATH, ckplus:PATH, affectnet:PATH, oulu:PATH or folder:PATH (see README)")
    t.add_argument("--init", metavar="random|imagenet|PATH", help="encoder start: random (default), torchvision's ImageNet "
                   "weights (resnet18), or a weights file of the backbone (model.backbone; .pth, .pth.tar, .ckpt, "
                   ".safetensors), such as a face-recognition network, as the paper starts")
    t.add_argument("--strict", action="store_true", default=None, help="stop at an unreadable image instead of skipping it")
    t.add_argument("--fold", type=int, metavar="K", help="CK+, Oulu-CASIA: test on subject-independent fold K (1..N, default 1)")
    t.add_argument("--folds", type=int, metavar="N", help="CK+, Oulu-CASIA: number of folds (default 10)")
    t.add_argument("--method", choices=choices(TrainConfig, "method"), help="dicefer (default) or the plain cross-entropy baseline")
    t.add_argument("--preset", choices=tuple(PRESET_SUMMARIES),
                   help="; ".join(f"{name}: {summary[:1].lower()}{summary[1:].rstrip('.')}"
                                  for name, summary in PRESET_SUMMARIES.items()) + ". Each is a file in dicefer/presets/")
    t.add_argument("--config", type=Path, metavar="FILE", help="YAML file with any config values (nested as in RUN/config.yaml)")
    t.add_argument("--out", type=Path, metavar="DIR", help="run folder (default: a new folder under runs/); must not hold a run already")
    t.add_argument("--resume", type=Path, metavar="RUN", help="continue RUN from its last checkpoint, in whichever stage, "
                   "with its saved config (only --device, --compile, --precision and --quiet may be given with it)")
    t.add_argument("--overwrite", action="store_true", help="replace the run in --out (its config, log, weights, "
                   "checkpoint and report, by name) instead of refusing; a folder holding anything else is refused")
    t.add_argument("--seed", type=int, help="random seed (data rendering, initialisation, pairs, augmentation)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. stage1.epochs=3 or mi.estimator=jsd (repeatable)")
    t.add_argument("overrides_positional", nargs="*", metavar="KEY=VALUE", help="same as --set")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    g = t.add_argument_group("hardware")
    g.add_argument("--device", choices=choices(TrainConfig, "device"), help="auto (default): CUDA when there is one. On CUDA: "
                   "bf16 autocast, channels_last, pinned memory, loader workers. On the CPU: convolution weight "
                   "gradients on small maps as a matmul where this CPU measured that faster")
    g.add_argument("--precision", choices=choices(TrainConfig, "precision"), help="auto (default): bf16 autocast on CUDA and on "
                   "CPUs that compute bf16 natively (AVX-512 BF16 or AMX), fp32 on other CPUs, where bf16 is "
                   "emulated and many times slower")
    g.add_argument("--compile", action="store_true", help="torch.compile the encoders (worth it on a GPU for runs "
                   "longer than a few minutes; the first steps pay for compiling)")

    e = sub.add_parser("evaluate", help="write RUN/report/ again from a run's saved weights",
                       description="Rebuild a run from RUN/model.safetensors and write RUN/report/ "
                       "(report.md, report.json, confusion matrices, embedding plot).")
    e.add_argument("--run", type=Path, required=True, metavar="DIR", help="a run folder written by `dicefer train`")
    e.add_argument("--data", metavar="SPEC", help="evaluate on another dataset than the one trained on")
    e.add_argument("--identity-reference", type=Path, metavar="PATH", help="a face-recognition MobileFaceNet checkpoint: "
                   "the report reads how much of its embedding each code predicts (identity on data without identity "
                   "labels; the run's identity_reference setting otherwise)")
    e.add_argument("--split", choices=choices(DataConfig, "eval_split"), help="the split to score: test (auto: test where the "
                   "dataset has one, else val) or val; the run's data.eval_split otherwise")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a data setting for reading the dataset: data.strict, data.fold, data.folds, data.peak_frames, "
                   "data.aligned, data.face_box (repeatable)")
    add_predict_parser(sub)
    add_export_parser(sub)
    add_serve_parser(sub)
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
                   "every side before cropping; by default each box is framed like the run's training faces, "
                   "measured by running the detector on faces the run kept (0.2 for haar, 0.15 for yunet on "
                   "runs without them)")
    p.add_argument("--every", type=int, default=10, metavar="N", help="video: analyse every N-th frame (default 10)")
    p.add_argument("--smooth", type=int, default=1, metavar="N",
                   help="video: average each tracked face's probabilities over its last N analysed frames, so labels "
                        "do not flicker (default 1: off). Every face in a video gets a `track` id either way")
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
    x.add_argument("--keep-convs", action="store_true",
                   help="keep every convolution a Conv node; by default those on maps of at most 4 positions "
                        "(layer4 at 48 px) become matrix products, faster for batches of faces but slower for one "
                        "face at a time and a larger file: keep them for single-face latency")
    x.add_argument("--int8", action="store_true",
                   help="quantize the convolutions to 8 bits (faster on a CPU; every convolution stays a Conv node), calibrated "
                        "on 256 of the run's training faces; prints how often it agrees with the float model on the "
                        "run's evaluation split, so the dataset must still be where the run found it")


def cmd_train(args: argparse.Namespace) -> int:
    hardware = ([f"device={args.device}"] * bool(args.device) + ["compile=true"] * args.compile
                + [f"precision={args.precision}"] * bool(args.precision))
    if args.resume:
        cfg, out = resumed_config(args, hardware), args.resume
    else:
        overrides = list(args.overrides) + list(args.overrides_positional) + hardware
        for flag, key in (("data", "data.spec"), ("method", "method"), ("seed", "seed"), ("init", "model.init"),
                          ("strict", "data.strict"), ("fold", "data.fold"), ("folds", "data.folds")):
            value = getattr(args, flag)
            if value is not None:
                overrides.append(f"{key}={value}")
        cfg = build_config(args.preset or "demo", args.config, overrides)
        if cfg.data.spec.path:
            cfg.data.spec.root()  # a missing dataset stops here, before torch is imported
        out = args.out or Path("runs") / time.strftime(f"%Y%m%d-%H%M%S-{cfg.method}")
    # torch is imported only once the arguments are known to be good
    from dicefer.pipeline import train_and_evaluate
    from dicefer.training.loop import Interrupted

    verb = "resuming" if args.resume else "training"
    print(f"dicefer: {verb} {cfg.method} on {cfg.data.spec} into {out}", file=sys.stderr)
    try:
        report = train_and_evaluate(cfg, out, show_progress=not args.quiet, resume=bool(args.resume), overwrite=args.overwrite)
    except Interrupted as err:
        print(f"dicefer: {err}; continue with: dicefer train --resume {out}", file=sys.stderr)
        return 128 + err.signum
    if report is not None:  # rank 0 of a distributed run, or a single process
        print_summary(report, out)
    return 0


def resumed_config(args: argparse.Namespace, hardware: list[str]):
    """The config saved in the run being resumed; only hardware flags may change it."""
    given = [f"--{name}" for name in ("data", "method", "preset", "config", "out", "seed") if getattr(args, name)]
    given += ["--set"] * bool(args.overrides or args.overrides_positional) + ["--overwrite"] * args.overwrite
    if given:
        raise ConfigError(f"--resume continues a run with its saved config; drop {', '.join(given)}")
    path = args.resume / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{args.resume} is not a dicefer run folder ({path.name} is missing)")
    return build_config(file=path, overrides=hardware, preset=None)


def add_serve_parser(sub) -> None:
    v = sub.add_parser("serve", help="serve a model over HTTP: a webcam page and a REST API",
                       description="A local HTTP server for a trained model: GET / is a page with a live webcam "
                       "(boxes, labels, per-class bars) that takes photos by drag and drop; POST /v1/predict takes "
                       "an image and returns its faces as JSON (box, label, calibrated probabilities; ?stream=NAME "
                       "tracks people across the requests of a stream); GET /docs describes the API. "
                       "Needs pip install 'dicefer[serve]'.")
    model = v.add_mutually_exclusive_group(required=True)
    model.add_argument("--run", type=Path, metavar="DIR", help="a run folder written by `dicefer train` (PyTorch)")
    model.add_argument("--onnx", type=Path, metavar="FILE", help="a model written by `dicefer export` (onnxruntime)")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                   "0.0.0.0 opens it to the network, with no authentication)")
    v.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    v.add_argument("--detector", choices=("haar", "none", "yunet"), default="haar", help="as for predict")
    v.add_argument("--detector-model", type=Path, metavar="FILE", help="YuNet model file, with --detector yunet")
    v.add_argument("--max-upload-mb", type=float, default=10, metavar="MB", help="largest image accepted (default 10)")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from dicefer.serve.app import create_app
    except ImportError:
        raise UserError("serving needs FastAPI and uvicorn: pip install 'dicefer[serve]'") from None
    from dicefer.inference import ExpressionRecognizer

    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: expected 1 to 65535")
    if not args.max_upload_mb > 0:
        raise UserError("--max-upload-mb must be above 0")
    options = {"detector": args.detector, "detector_model": args.detector_model}
    recognizer = (ExpressionRecognizer.from_run(args.run, **options) if args.run
                  else ExpressionRecognizer.from_onnx(args.onnx, **options))
    app = create_app(recognizer, max_upload=int(args.max_upload_mb * 2**20))
    print(f"dicefer: serving on http://{args.host}:{args.port}/ (API: /docs; stop with Ctrl+C)", file=sys.stderr)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    except OSError as err:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({err.strerror})") from None
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from dicefer.evaluation.evaluate import evaluate_run

    if args.identity_reference is not None and not args.identity_reference.is_file():
        raise UserError(f"--identity-reference {args.identity_reference}: no such file")
    settings = [*args.overrides, *[f"data.eval_split={args.split}"] * bool(args.split)]
    report = evaluate_run(args.run, args.data, identity_reference=args.identity_reference, data_settings=settings)
    print_summary(report, args.run)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from dicefer.inference import ExpressionRecognizer
    from dicefer.inference.outputs import Annotator, open_sink, written_by_predict
    from dicefer.inference.predict import predict_inputs

    if args.every < 1:
        raise UserError("--every must be at least 1")
    if args.smooth < 1:
        raise UserError("--smooth must be at least 1 (1: no smoothing)")
    if args.out is not None:
        output_file(args.out, "--out", written_by_predict)
    if args.annotate is not None:
        output_folder(args.annotate, "--annotate")
    options = {"detector": args.detector, "detector_model": args.detector_model, "margin": args.margin}
    recognizer = (ExpressionRecognizer.from_run(args.run, **options) if args.run
                  else ExpressionRecognizer.from_onnx(args.onnx, **options))
    if args.margin is None and args.detector != "none":
        print(f"dicefer: {args.detector} boxes framed like the training faces: {recognizer.framing}", file=sys.stderr)
    annotator = Annotator(args.annotate) if args.annotate else None
    try:
        output = open(args.out, "w", newline="") if args.out else nullcontext(sys.stdout)
    except OSError as err:
        raise UserError(f"--out {args.out}: cannot write it ({err.strerror})") from None
    with output as stream:
        sink = open_sink(args.out, stream, recognizer.classes)
        summary = predict_inputs(recognizer, args.inputs, sink, annotator, args.every, show_progress=not args.quiet,
                                 smooth=args.smooth)
    if summary.images + summary.frames == 0:
        raise UserError(f"nothing could be processed: none of the {len(args.inputs)} inputs gave a readable image")
    analysed = [f"{n} {what}" for n, what in ((summary.images, "images"), (summary.frames, "video frames")) if n]
    print(f"dicefer: {summary.faces} faces in {' and '.join(analysed)}"
          + (f", {summary.failed} inputs skipped" if summary.failed else ""), file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from dicefer.inference.onnx_export import export_onnx, written_by_export

    output_file(args.out, "--out", written_by_export)

    if not args.int8:
        difference = export_onnx(args.run, args.out, dense=not args.keep_convs)
        check = ("not checked: onnxruntime is not installed" if difference is None
                 else f"max |onnxruntime - PyTorch| probability difference {difference:.2e}")
        print(f"dicefer: wrote {args.out} ({check})", file=sys.stderr)
        return 0
    import tempfile

    from dicefer.inference.quantize import quantize_int8
    from dicefer.run import LoadedRun

    with tempfile.TemporaryDirectory(dir=args.out.parent) as tmp:
        float_model = Path(tmp) / "float.onnx"
        export_onnx(args.run, float_model, dense=False)
        c = quantize_int8(LoadedRun(args.run), float_model, args.out)
    print(f"dicefer: wrote {args.out} (int8); on {c.faces} faces of the run's evaluation split it gives the float "
          f"model's label to {100 * c.agreement:.1f}% (accuracy {c.accuracy_int8:.3f}, float {c.accuracy_float:.3f}; "
          f"largest probability difference {c.max_difference:.3f})", file=sys.stderr)
    return 0


def print_summary(report: dict, run: Path) -> None:
    from dicefer.evaluation.report import evaluated_split

    d = report["disentanglement"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
    split = evaluated_split(report)
    print(f"{split} accuracy {report[split]['accuracy']:.3f}  macro-F1 {report[split]['macro_f1']:.3f}  "
          f"MIG {fmt(d['mig'])}  identity probe E {fmt(d['identity_probe_accuracy_E'])} "
          f"I {fmt(d['identity_probe_accuracy_I'])}, whitened E {fmt(d.get('identity_probe_whitened_E'))} "
          f"I {fmt(d.get('identity_probe_whitened_I'))} (chance {fmt(d['chance_identity'])})")
    if d.get("identity_r2"):
        print("identity R^2 (of a face-recognition embedding) " + ", ".join(f"{k} {v:.3f}" for k, v in d["identity_r2"].items()))
    print(f"report: {run / 'report' / 'report.md'}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """argparse takes positional KEY=VALUE overrides only before the first option that follows
    them; `train --set a=1 --method supervised b=2` must work too, so later ones are collected here."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "train" and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides_positional = [*args.overrides_positional, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="dicefer: %(message)s")
    try:
        commands = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export,
                    "serve": cmd_serve}
        return commands[args.command](args)
    except UserError as err:
        print(f"dicefer: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dicefer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
