"""The `aware3d` command line. It only parses arguments and calls into the package; every heavy
import (torch, the methods) happens inside a handler so that `aware3d --help` answers fast. The
method names come from the registry (:mod:`aware3d.registry`), the one list of methods."""
from __future__ import annotations

import argparse
import sys

from .registry import METHODS


def _range(text: str) -> tuple[int, int]:
    """'1-2' -> (1, 2); '3' -> (3, 3)."""
    try:
        parts = [int(p) for p in text.split("-")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or A-B (e.g. 1-2), got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or parts[0] < 1 or parts[1] < parts[0]:
        raise argparse.ArgumentTypeError(f"expected N or A-B with 1 <= A <= B, got {text!r}")
    return parts[0], parts[1]


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def _positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not x > 0 or x != x or x == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return x


def _downscale(text: str):
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or auto, got {text!r}")
    return n


def _override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aware3d",
        description="Neural scene representation: reconstruct radiance fields from posed photos "
                    f"({', '.join(n for n, e in METHODS.items() if e.kind == 'field')}) and train "
                    "controllable 3D-aware GANs "
                    f"({', '.join(n for n, e in METHODS.items() if e.kind == 'gan')}).")
    from . import __version__
    p.add_argument("--version", action="version", version=f"aware3d {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    # data ----------------------------------------------------------------------------------------
    d = sub.add_parser("data", help="make built-in datasets, or turn your photos / video into a posed scene")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION")
    proc = dsub.add_parser("process", help="structure from motion on your photos or video (pycolmap; "
                                           "pip install \".[sfm]\"): a nerfstudio-style scene to train on")
    psub = proc.add_subparsers(dest="process_kind", metavar="KIND")
    pi = psub.add_parser("images", help="a folder of photos -> transforms.json, images/, images_2/4/8, sparse_pc.ply")
    pi.add_argument("src", help="folder of photos (jpg, png, ...)")
    pi.add_argument("out", help="output folder (must not exist or be empty; see --overwrite)")
    pi.add_argument("--matching", choices=("auto", "exhaustive", "sequential"), default="auto",
                    help="feature matching (auto: exhaustive for small photo sets, sequential for large)")
    pv = psub.add_parser("video", help="a video -> the sharpest frame of each window, then as images")
    pv.add_argument("src", help="video file (anything ffmpeg reads: mp4, mov, ...)")
    pv.add_argument("out", help="output folder")
    pv.add_argument("--num-frames", type=_positive_int, default=100, help="frames to keep (default 100)")
    pv.add_argument("--matching", choices=("auto", "exhaustive", "sequential"), default="sequential",
                    help="feature matching (default sequential)")
    for q in (pi, pv):
        q.add_argument("--max-size", type=_positive_int, default=None, help="longer image side in pixels (default: keep)")
        q.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
        q.add_argument("--verbose", action="store_true", help="show COLMAP's own log")
    synth = dsub.add_parser("synth", help="render a dataset with the built-in analytic ray caster")
    ssub = synth.add_subparsers(dest="synth_kind", metavar="KIND")
    sc = ssub.add_parser("scene", help="posed multi-view scene in Blender format (train/val/test, depth, masks)")
    sc.add_argument("out", help="output folder")
    sc.add_argument("--views", type=_positive_int, default=100, help="number of views in all (default 100: 80/10/10)")
    sc.add_argument("--resolution", type=_positive_int, default=128, help="image width and height (default 128)")
    sc.add_argument("--sphere", action="store_true", help="cameras on the full sphere (default: upper hemisphere)")
    sc.add_argument("--wild", action="store_true",
                    help="per-image lighting/exposure changes and transient occluders in training views")
    sc.add_argument("--dynamic", action="store_true",
                    help="a dynamic scene (D-NeRF format, frames carry a time): objects move, turn and deform; "
                    "one camera circles them; held-out times and poses for val/test (for dnerf / tnerf)")
    sc.add_argument("--seed", type=int, default=0)
    ob = ssub.add_parser("objects", help="unposed CLEVR-like image collection with labels (for the GANs)")
    ob.add_argument("out", help="output folder")
    ob.add_argument("--count", type=_positive_int, default=1000, help="number of images (default 1000)")
    ob.add_argument("--resolution", type=_positive_int, default=64, help="image size (default 64)")
    ob.add_argument("--objects", type=_range, default=(1, 2), help="objects per scene, N or A-B (default 1-2)")
    ob.add_argument("--seed", type=int, default=0)

    # doctor --------------------------------------------------------------------------------------
    dr = sub.add_parser("doctor", help="build the compiled kernels now and report torch, device, threads, "
                                       "kernel status and cache paths")
    dr.add_argument("--no-build", action="store_true", help="report only; do not build the kernels")

    # methods -------------------------------------------------------------------------------------
    ms = sub.add_parser("methods", help="list the methods (and with --verbose their presets)")
    ms.add_argument("--verbose", "-v", action="store_true", help="also list each method's presets")

    # train ---------------------------------------------------------------------------------------
    t = sub.add_parser("train", help="train a method on a dataset",
                       epilog="methods: " + "; ".join(f"{n}: {e.summary}" for n, e in METHODS.items()))
    t.add_argument("method", choices=list(METHODS),
                   help="method to train (`aware3d train METHOD --help` lists its presets and settings)")
    p._train_parser = t
    t.add_argument("--data", required=True, help="dataset folder (posed scene or image collection)")
    t.add_argument("--out", default=None, help="run folder (default runs/METHOD-DATANAME)")
    t.add_argument("--preset", default=None,
                   help="named settings (`aware3d methods --verbose` lists each method's; e.g. paper, cpu, tiny)")
    t.add_argument("--max-steps", type=_positive_int, default=None, help="stop after N optimisation steps")
    t.add_argument("--max-minutes", type=_positive_float, default=None, help="stop after M minutes of training")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--downscale", type=_downscale, default=None, metavar="N|auto",
                   help="radiance fields: shrink images by N (default auto: the smallest power of 2 that "
                   "fits 300k pixels per image on a CPU, 2M on a GPU)")
    t.add_argument("--batch-size", type=_positive_int, default=None, help="rays (reconstruction) or images (GAN) per step")
    t.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    t.add_argument("--cam", action="store_true", help="add coordinate-aware modulation to the field")
    t.add_argument("--backbone", choices=("mlp", "ngp"), default=None, help="nerfw: field backbone")
    t.add_argument("--set", dest="overrides", type=_override, action="append", default=[],
                   metavar="KEY=VALUE", help="override one config value (repeatable)")
    t.add_argument("--viewer", action="store_true",
                   help="serve the web viewer while training (live image, loss, pause, save now; "
                   "pip install \"aware3d[viewer]\")")
    t.add_argument("--host", default="127.0.0.1", help="viewer: address to listen on (default 127.0.0.1)")
    t.add_argument("--port", type=_positive_int, default=7007, help="viewer: port (default 7007)")

    # view ----------------------------------------------------------------------------------------
    v = sub.add_parser("view", help="web viewer of a run: fly through a field, steer a GAN (until Ctrl-C)")
    v.add_argument("run", help="run folder")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=_positive_int, default=7007, help="port (default 7007)")
    v.add_argument("--resolution", type=_positive_int, default=256,
                   help="radiance fields: pixels on the longer side of the refined frame (default 256)")
    v.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")

    # eval ----------------------------------------------------------------------------------------
    e = sub.add_parser("eval", help="measure a trained run (PSNR/SSIM or FID/KID); writes RUN/eval/metrics.json")
    e.add_argument("run", help="run folder")
    e.add_argument("--data", default=None, help="dataset to evaluate on (default: the training data)")
    e.add_argument("--split", default=None, help="radiance fields: dataset split (default test)")
    e.add_argument("--n-gen", type=_positive_int, default=None, help="GANs: generated images for FID/KID (default 5000)")
    e.add_argument("--checkpoint", default=None, metavar="STEP|FILE",
                   help="measure this checkpoint (a step or a .pt file) instead of the latest; "
                   "writes RUN/eval/metrics_step_XXXXXXXX.json")
    e.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    e.add_argument("--max-views", type=_positive_int, default=None, help="radiance fields: the first N views of the split")
    e.add_argument("--downscale", type=_positive_int, default=None,
                   help="radiance fields: evaluate at this downscale (default the run's)")
    e.add_argument("--appearance-half", choices=("left",), default=None,
                   help="nerfw: optimise test appearance on the left half, measure on the right")

    # render --------------------------------------------------------------------------------------
    r = sub.add_parser("render", help="render images / MP4 / GIF from a run")
    r.add_argument("run", help="run folder")
    r.add_argument("--program", default=None, nargs="+", metavar=("NAME", "FILE"),
                   help="render program (fields: turntable (default for synthetic scenes), orbit, "
                   "training-path (default for captures), spiral, interpolate, test-views, path FILE.json; "
                   "GANs: their controls, e.g. yaw-sweep, camera-elevation); --list shows the run's")
    r.add_argument("path", nargs="?", default=None, help="camera path JSON for --program path")
    r.add_argument("--out", default=None, help="output folder (default RUN/render/PROGRAM)")
    r.add_argument("--frames", type=_positive_int, default=None, help="number of frames")
    r.add_argument("--seed", type=int, default=None, help="GANs: latent seed (default 0)")
    r.add_argument("--time", type=float, default=None, help="dynamic scenes: the moment in [0, 1] (time-orbit)")
    r.add_argument("--samples", type=_positive_int, default=None, help="GANs: samples side by side in each frame")
    r.add_argument("--resolution", type=_positive_int, default=None, help="radiance fields: image width (default the training width)")
    r.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    r.add_argument("--list", action="store_true", help="list the run's render programs with a line on each")

    # export --------------------------------------------------------------------------------------
    FRAME_HELP = ("frame of the written points: scene (the run's, default), data (the dataset files' frame, "
                  "before load-time normalisation) or sfm (the structure-from-motion model's, for processed "
                  "captures)")
    x = sub.add_parser("export", help="export geometry")
    xsub = x.add_subparsers(dest="export_kind", metavar="KIND")
    m = xsub.add_parser("mesh", help="marching-cubes mesh as PLY (vertex colours; level chosen from the field)")
    m.add_argument("run", help="run folder")
    m.add_argument("--resolution", type=_positive_int, default=256, help="grid resolution (default 256)")
    m.add_argument("--threshold", type=float, default=None, help="density level (default per method)")
    m.add_argument("--out", default=None, help="output PLY (default RUN/mesh.ply)")
    m.add_argument("--seed", type=int, default=None, help="GANs: latent seed (default 0)")
    m.add_argument("--object", type=int, default=None, help="GIRAFFE: which object (default 0)")
    m.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    m.add_argument("--frame", choices=("scene", "data", "sfm"), default=None, help=FRAME_HELP)
    pc = xsub.add_parser("pointcloud", help="coloured points from rendered depth of the training views (PLY)")
    pc.add_argument("run", help="run folder (a radiance field)")
    pc.add_argument("--num-points", type=_positive_int, default=None, help="points (default 100000)")
    pc.add_argument("--min-opacity", type=float, default=None, help="keep rays at least this opaque (default 0.5)")
    pc.add_argument("--out", default=None, help="output PLY (default RUN/pointcloud.ply)")
    pc.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    pc.add_argument("--frame", choices=("scene", "data", "sfm"), default=None, help=FRAME_HELP)

    # fit -----------------------------------------------------------------------------------------
    f = sub.add_parser("fit", help="fit a field to a signal")
    fsub = f.add_subparsers(dest="fit_kind", metavar="KIND")
    fi = fsub.add_parser("image", help="fit a 2D image with an MLP or hash-grid field (optionally --cam)")
    fi.add_argument("path", help="image file")
    fi.add_argument("--field", choices=("mlp", "hash"), default="mlp")
    fi.add_argument("--cam", action="store_true")
    fi.add_argument("--steps", type=_positive_int, default=1000)
    fi.add_argument("--resolution", type=_positive_int, default=256,
                    help="the image's longer side is area-resized to at most N pixels (default 256)")
    fi.add_argument("--out", default=None)
    fv = fsub.add_parser("video", help="fit a video with a NeRV / FFNeRV frame-wise representation (optionally --cam)")
    fv.add_argument("path", help="video file (MP4, ...) or a folder of frames (images, taken in name order)")
    fv.add_argument("--model", choices=("nerv", "ffnerv"), default="nerv")
    fv.add_argument("--config", default=None,
                    help="named layer sizes: nerv-cpu, ffnerv-cpu (defaults), nerv-s, ffnerv-rep (the papers' 1280x720 ones)")
    fv.add_argument("--cam", action="store_true", help="CAM's temporal modulation after each block's conv")
    fv.add_argument("--flow-aggregation", action=argparse.BooleanOptionalAction, default=None,
                    help="ffnerv: FFNeRV's flow-guided aggregation of the neighbouring frames -2 -1 +1 +2 "
                         "(flow and blending heads, frame buffer, warping); on by default for ffnerv, as the "
                         "official code")
    fv.add_argument("--mod-res", type=_positive_int, default=None,
                    help="CAM grid points over time (default 16; the paper's FFNeRV setting uses 60)")
    fv.add_argument("--steps", type=_positive_int, default=1000, help="training steps (frames seen, batch 1)")
    fv.add_argument("--resolution", type=_positive_int, default=64,
                    help="frames are area-resized so the longer side is about N pixels, snapped to the "
                         "model's upsampling factor (default 64)")
    fv.add_argument("--max-frames", type=_positive_int, default=None, help="use the first N frames only")
    fv.add_argument("--batch", type=_positive_int, default=1, help="frames per step (default 1, as the papers)")
    fv.add_argument("--seed", type=int, default=0)
    fv.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    fv.add_argument("--out", default=None, help="output folder (default ./fit-<name>-<model>[-cam])")
    fs = fsub.add_parser("signal", help="CAM's 1D experiment: fit a 1D function with an MLP, an MLP on a "
                                        "positional encoding, and each with CAM; MSE per arm, a plot and a JSON",
                         description="CAM's 1D experiment (the official notebook's setting by default): full-batch "
                                     "MSE, Adam; networks of LAYERS Linear layers of HIDDEN + a Linear head, no "
                                     "activation (as the notebook; --act relu adds ReLU); CAM: a GRID-point "
                                     "scale / shift grid over x after every hidden layer. Writes OUT/signal_fit.png "
                                     "(fits and error spectra) and OUT/results.json.")
    fs.add_argument("path", nargs="?", default=None,
                    help="samples of a 1D function, .npy or .csv: one column (y at evenly spaced x) or two (x, y), "
                         "x mapped to [0, 1] (default: the notebook's sum of ten sines at 5..50 cycles)")
    fs.add_argument("--arms", default="noenc,pe,cam,cam_pe",
                    help="comma-separated networks: noenc (MLP on x), pe (MLP on the sinusoidal encoding), cam, "
                         "cam_pe (the same with CAM) (default all four)")
    fs.add_argument("--steps", type=_positive_int, default=1500, help="Adam steps per network (default 1500)")
    fs.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate (default 1e-3)")
    fs.add_argument("--act", choices=("none", "relu"), default="none",
                    help="hidden activation (default none, as the notebook)")
    fs.add_argument("--hidden", type=_positive_int, default=64, help="hidden width (default 64)")
    fs.add_argument("--layers", type=_positive_int, default=4, help="hidden Linear layers (default 4)")
    fs.add_argument("--grid", type=_positive_int, default=64, help="CAM grid points over x (default 64)")
    fs.add_argument("--samples", type=_positive_int, default=200,
                    help="samples of the built-in function (default 200)")
    fs.add_argument("--seed", type=int, default=31210, help="initialisation seed (default the notebook's 31210)")
    fs.add_argument("--out", default=None, help="output folder (default ./fit-signal-<name>)")

    # demo ----------------------------------------------------------------------------------------
    dm = sub.add_parser("demo", help="the main job on built-in data: synthesise a scene, train ngp, render a turntable")
    dm.add_argument("--out", default="aware3d-demo", help="output folder (default ./aware3d-demo)")
    dm.add_argument("--minutes", type=_positive_float, default=2.0,
                    help="training time in minutes, kernel build and data loading not counted (default 2; at least 300 steps)")
    dm.add_argument("--device", default=None)
    return p


def _method_help(parser: argparse.ArgumentParser, argv: list[str]) -> bool:
    """``aware3d train METHOD --help``: the train options, then the method's presets and every
    ``--set`` key with its type, default and meaning. True when it printed them."""
    if len(argv) < 2 or argv[0] != "train" or not {"-h", "--help"} & set(argv):
        return False
    names = [a for a in argv[1:] if a in METHODS]
    if not names:
        return False
    from .registry import get

    parser._train_parser.print_help()
    print()
    print(get(names[0]).describe())
    return True


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if _method_help(parser, list(sys.argv[1:] if argv is None else argv)):
        return 0
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        from . import commands
        handler = getattr(commands, "cmd_" + args.command)
        return int(handler(args, parser) or 0)
    except KeyboardInterrupt:
        print("\naware3d: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # user errors (bad paths, bad data, bad options, unreadable checkpoints): one clear line;
        # anything else is a bug and keeps its traceback. AWARE3D_DEBUG=1 shows all tracebacks.
        import os

        user_error = isinstance(exc, (OSError, ValueError)) or type(exc).__name__ == "CheckpointError"
        if not user_error or os.environ.get("AWARE3D_DEBUG"):
            raise
        print(f"aware3d: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
