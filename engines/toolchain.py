"""`holoburn engine build | list | verify | clear`: the engine toolchain behind one command.

build: convert (fp16 / int8), gate against FP32 on a held-out set, then build the backend's
artefact, all into the engine cache:
- onnxruntime: the gated FP16 / Q-DQ INT8 ONNX is the artefact (fp32 uses the card's ONNX);
- tensorrt / tensorrt-rtx: an engine from that ONNX with a dynamic optimization profile;
- torch: nothing to build (the state dict is loaded as it is); fp16 is still gated through ONNX.
A refused gate prints the table, writes it (markdown + JSON) into the cache beside where the
artefact would be, caches nothing and exits 3.

Exit codes: 0 done; 1 `verify` found a bad entry, or no entry at all (an empty or missing cache:
nothing was verified, and it says so); 2 bad input (card, frames, options, a cache folder or key
that cannot be read); 3 refused by the gate, or a backend not available here or failed. The
declared errors (clinical/errors.py) exit with their own codes, as from every `holoburn` command.

`add_engine_arguments(parser_or_subparsers)` adds the sub-commands; `run_engine(args)` runs them
and returns the exit code. `build(...)` is the same work as a function (for `holoburn run`/`validate`
to prepare an engine before the first frame, and for tests).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from holoburn.clinical.errors import BadConfig, HoloburnError
from holoburn.engines.backend import PRECISIONS, BackendUnavailable, cuda_available
from holoburn.engines.cache import EngineCache, cache_root
from holoburn.engines.card import load_card

log = logging.getLogger("holoburn.engines.toolchain")

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_REFUSED = 0, 1, 2, 3
BUILD_BACKENDS = ("auto", "onnxruntime", "tensorrt", "tensorrt-rtx", "torch")


@dataclass
class BuildOutcome:
    """What `build` did: the artefact (None if refused), whether it came from the cache, the gate verdict."""

    backend: str
    precision: str
    artefact: Path | None
    cache_hit: bool
    seconds: float
    model: Path | None = None  # the ONNX at that precision
    gate: dict | None = None  # GateReport.summary() when a gate ran in this call
    gate_table: Path | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "artefact": str(self.artefact) if self.artefact else None,
            "model": str(self.model) if self.model else None,
            "cache_hit": self.cache_hit,
            "seconds": round(self.seconds, 3),
            "gate": self.gate,
            "gate_table": str(self.gate_table) if self.gate_table else None,
            "notes": self.notes,
        }


def _trt_importable(flavour: str) -> bool:
    from holoburn.engines.tensorrt_backend import import_trt

    try:
        import_trt(flavour)
        return True
    except BackendUnavailable:
        return False


def pick_build_backend(requested: str) -> str:
    """`auto` for a build: TensorRT on a GPU when present, else TensorRT-RTX when present, else ONNX Runtime."""
    if requested != "auto":
        return requested
    if cuda_available() and _trt_importable("tensorrt"):
        return "tensorrt"
    if _trt_importable("tensorrt-rtx"):
        return "tensorrt-rtx"
    return "onnxruntime"


def build(
    card,
    backend: str = "auto",
    precision: str = "fp32",
    *,
    holdout=None,
    calibration_frames=None,
    strategy=None,
    cache=None,
    profile=None,
    max_batch: int = 1,
    target: str | None = None,
    force: bool = False,
    threads: int | None = None,
) -> BuildOutcome:
    """Build (or find in the cache) the artefact for (card, backend, precision).

    holdout: (frame (H, W, 3) uint8 RGB, mask (H, W) uint8) pairs, needed to gate fp16/int8
    (not needed when the gated model is already cached). calibration_frames: (H, W, 3) uint8 RGB
    (int8). Raises precision.GateRefused when the gate refuses.
    """
    from holoburn.engines.precision import PrecisionModelMissing, build_precision_model, model_for_precision
    from holoburn.engines.quantize import load_strategy

    if precision not in PRECISIONS:
        raise BadConfig(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    started = time.perf_counter()
    backend = pick_build_backend(backend)
    strategy = strategy or load_strategy()
    cache = cache if isinstance(cache, EngineCache) else EngineCache(cache)
    outcome = BuildOutcome(backend, precision, None, True, 0.0)
    if backend == "torch" and precision == "int8":
        raise BackendUnavailable("the torch backend has no int8; use onnxruntime or tensorrt")

    # 1. the ONNX at this precision: converted + gated (or from the cache)
    model = card.onnx_path
    if precision != "fp32":
        try:
            model = model_for_precision(card, precision, cache, strategy)
            if force:
                raise PrecisionModelMissing("rebuild requested")
        except PrecisionModelMissing:
            if holdout is None:
                raise
            result = build_precision_model(
                card, precision, holdout, calibration_frames=calibration_frames, strategy=strategy,
                cache=cache, threads=threads, force=True,
            )
            model = result.path
            outcome.cache_hit = False
            if result.report is not None:
                outcome.gate = result.report.summary()
                outcome.gate_table = cache.report_base(result.key, card.model_id).with_name(
                    cache.report_base(result.key, card.model_id).name + ".gate.md"
                )
    outcome.model = model

    # 2. the backend's artefact
    if backend in ("tensorrt", "tensorrt-rtx"):
        from holoburn.engines.tensorrt_backend import Profile, ensure_engine

        if not isinstance(profile, Profile):
            profile = Profile.parse(profile, card, max_batch)
        engine = ensure_engine(card, backend, precision, profile, cache=cache, strategy=strategy, target=target, force=force)
        outcome.artefact = engine.path
        outcome.cache_hit = outcome.cache_hit and engine.cache_hit
        if outcome.gate_table is not None and outcome.gate_table.is_file():
            # the gate's table also beside the engine it vouches for
            from holoburn.processing.files import atomic_write

            stem = engine.path.name.split(".")[0]  # cache stems have no dots (cache._safe)
            atomic_write(engine.path.with_name(stem + ".gate.md"), outcome.gate_table.read_bytes())
            atomic_write(engine.path.with_name(stem + ".gate.json"), outcome.gate_table.with_suffix(".json").read_bytes())
        if not cuda_available():
            outcome.notes.append(f"built on a machine without a GPU: the engine was not executed here ({engine.key.compute_capability})")
    else:
        outcome.artefact = model
        if backend == "torch":
            from holoburn.engines.torch_backend import state_dict_path

            outcome.artefact = state_dict_path(card)
            if precision == "fp16":
                outcome.notes.append("torch fp16 runs .half() weights; the gate measured the FP16 ONNX")
    outcome.seconds = time.perf_counter() - started
    return outcome


# -- command line ------------------------------------------------------------------------------
def add_engine_arguments(target) -> argparse.ArgumentParser:
    """Add `engine build|list|verify|clear`.

    target: the `add_subparsers()` object of the main parser (an `engine` command is added to it),
    or an ArgumentParser that becomes the `engine` command itself. Returns the engine parser.
    """
    if isinstance(target, argparse.ArgumentParser):
        parser = target
    else:
        parser = target.add_parser("engine", help="build, list, verify or clear inference engines", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="engine_command", metavar="build|list|verify|clear")
    commands.required = True

    def common(p):
        p.add_argument("--cache-dir", default=None, help=f"engine cache (default $HOLOBURN_ENGINE_CACHE or {cache_root()})")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        return p

    b = common(commands.add_parser("build", help="convert, gate and build an engine into the cache"))
    b.add_argument("--model", default=None, help="model card YAML (default: the shipped burn_unet_v2)")
    b.add_argument("--backend", default="auto", choices=BUILD_BACKENDS, help="default auto: tensorrt on a GPU, else tensorrt-rtx, else onnxruntime")
    b.add_argument("--precision", default="fp32", choices=PRECISIONS)
    b.add_argument("--calib", default=None, help="INT8 calibration frames: a folder of PNG/JPEG, a video, or a `holoburn synth` folder")
    b.add_argument("--holdout", default=None, help="held-out set for the accuracy gate: frames (video or PNGs) + masks/ (a `holoburn synth` folder)")
    b.add_argument("--holdout-frames", type=int, default=None, help="use this many evenly spaced held-out frames (default all)")
    b.add_argument("--domain", default=None, help="quantization strategy from configs/quantization.yaml (default: its default_domain)")
    b.add_argument("--calibration-method", default=None, choices=("entropy", "percentile", "minmax"), help="override the domain's method")
    b.add_argument("--max-drop", type=float, default=None, help="gate limit in Dice/sensitivity points (default: the domain's, 1.0)")
    b.add_argument("--profile", default=None, help="optimization profile MIN:OPT:MAX pixels per side (default 224:<card size>:1024)")
    b.add_argument("--max-batch", type=int, default=1, help="largest batch of the profile (default 1)")
    b.add_argument("--target", default=None, help="TensorRT-RTX without a GPU: compute capability to build for, e.g. sm86 (default portable)")
    b.add_argument("--force", action="store_true", help="rebuild even when the cache has it")
    b.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads for calibration and the gate")

    common(commands.add_parser("list", help="list cached engines and converted models"))
    v = common(commands.add_parser("verify", help="check every cache entry (truncated, corrupt, forged or foreign files); exit 1 if any is bad or there is none"))
    v.add_argument("--remove-bad", action="store_true", help="delete entries that fail (they are rebuilt on next use)")
    c = common(commands.add_parser("clear", help="delete cache entries"))
    c.add_argument("--model", default=None, help="only entries of this card's model")
    c.add_argument("--backend", default=None, help="only entries of this backend")
    c.add_argument("--precision", default=None, choices=PRECISIONS, help="only entries of this precision")
    return parser


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _table(headers: list[str], rows: list[list]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)] if rows else [len(h) for h in headers]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _cmd_build(args) -> int:
    from holoburn.engines.frames import iter_frames_rgb
    from holoburn.engines.gate import load_labelled_set
    from holoburn.engines.precision import GateRefused
    from holoburn.engines.quantize import CalibrationError, load_strategy

    if not logging.getLogger().handlers:  # show conversion and engine-build progress
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    card = load_card(args.model)
    strategy = load_strategy(args.domain).with_overrides(calibration_method=args.calibration_method, max_drop_points=args.max_drop)
    holdout = calib = None
    if args.precision != "fp32":
        if args.holdout:
            holdout = load_labelled_set(args.holdout, args.holdout_frames)
        if args.precision == "int8" and args.calib:
            if args.holdout and Path(args.calib).resolve() == Path(args.holdout).resolve():
                raise CalibrationError("--calib and --holdout are the same set: the gate must measure frames the calibration did not see")
            calib = list(iter_frames_rgb(args.calib, strategy.calibration_frames))
    try:
        outcome = build(
            card, args.backend, args.precision, holdout=holdout, calibration_frames=calib, strategy=strategy,
            cache=args.cache_dir, profile=args.profile, max_batch=args.max_batch, target=args.target,
            force=args.force, threads=args.threads,
        )
    except GateRefused as exc:
        report = exc.report
        print(report.to_markdown(), file=sys.stdout)
        hints = []
        if report.lost():
            hints.append(f"try another --calibration-method or --domain, or add the failing layers to sensitive_layers in {card.path}")
        if report.untested():
            hints.append("give a --holdout whose masks show every burn class")
        print(f"holoburn engine build: REFUSED, nothing was cached: the {args.precision} model of {card.model_id}. "
              f"{report.reason()} To do: {'; '.join(hints)}.", file=sys.stderr)
        return EXIT_REFUSED
    if args.json:
        print(json.dumps(outcome.to_json(), indent=1))
    else:
        if outcome.gate_table is not None and outcome.gate_table.is_file():
            print(outcome.gate_table.read_text())
        print(f"{outcome.backend} {outcome.precision}: {outcome.artefact} "
              f"({'from the cache' if outcome.cache_hit else 'built'} in {outcome.seconds:.2f} s)")
        for note in outcome.notes:
            print(f"note: {note}")
    return EXIT_OK


def _entry_row(entry) -> list:
    key = entry.key
    payload = entry.payload_path
    size = payload.stat().st_size if payload is not None and payload.is_file() else 0
    gpu = key.get("gpu_name", "?")
    return [
        entry.header.get("model_id", "?"), key.get("backend", "?"), key.get("backend_version", "?"), key.get("precision", "?"),
        key.get("profile", "?"), "any" if gpu == "any" else f"{gpu} {key.get('compute_capability', '')}".strip(), _human_bytes(size),
        "ok" if entry.ok else f"BAD: {entry.problem}",
    ]


HEADERS = ["model", "backend", "version", "precision", "profile", "device", "size", "status"]


def _cmd_list(args) -> int:
    cache = EngineCache(args.cache_dir)
    entries = list(cache.entries(check_sha=False))
    if args.json:
        print(json.dumps([{"header": str(e.header_path), "key": e.key, "payload": str(e.payload_path), "problem": e.problem} for e in entries], indent=1))
        return EXIT_OK
    print(f"engine cache {cache.root}: {len(entries)} entries")
    if entries:
        print(_table(HEADERS, [_entry_row(e) for e in entries]))
    return EXIT_OK


def _this_device_mismatch(entry) -> str | None:
    """Why an engine entry cannot be used on this machine (another GPU or version), or None."""
    key = entry.key
    backend = key.get("backend", "")
    if backend not in ("tensorrt", "tensorrt-rtx"):
        return None
    from holoburn.engines.tensorrt_backend import device_identity, import_trt

    try:
        trt = import_trt(backend)
    except BackendUnavailable:
        return f"{backend} not installed here"
    if str(trt.__version__) != key.get("backend_version"):
        return f"built by {backend} {key.get('backend_version')}, this is {trt.__version__}"
    gpu, cc, sms = device_identity()
    if gpu != "none" and (key.get("gpu_name"), key.get("compute_capability"), key.get("sm_count")) != (gpu, cc, sms):
        return f"built for {key.get('gpu_name')} {key.get('compute_capability')}, this is {gpu} {cc}"
    return None


def _cmd_verify(args) -> int:
    cache = EngineCache(args.cache_dir)
    entries = list(cache.entries(check_sha=True))
    if not entries:  # nothing verified is not "all ok"
        orphans = cache.orphans()
        state = "is empty" if cache.root.is_dir() else "does not exist"
        if args.json:
            print(json.dumps({"cache": str(cache.root), "empty": True, "entries": [], "bad": 0, "orphans": [str(p) for p in orphans]}, indent=1))
        else:
            print(f"engine cache {cache.root} {state} ({len(orphans)} orphaned files): nothing to verify; "
                  "`holoburn engine build` (or the first run) fills it")
        return EXIT_FAILED
    bad = 0
    rows, report = [], []
    for entry in entries:
        status = "ok" if entry.ok else f"BAD: {entry.problem}"
        if entry.ok and entry.key.get("backend") in ("tensorrt", "tensorrt-rtx") and cuda_available():
            from holoburn.engines.tensorrt_backend import engine_validity

            try:
                valid, why = engine_validity(entry.key["backend"], entry.payload_path.read_bytes())
            except BackendUnavailable:
                valid, why = True, "runtime not installed"
            if not valid:
                entry.problem = f"runtime rejects it: {why}"
                status = f"BAD: {entry.problem}"
        if entry.ok:
            mismatch = _this_device_mismatch(entry)
            if mismatch:
                status = f"ok (not for this machine: {mismatch})"
        else:
            bad += 1
            if args.remove_bad:
                cache.remove(entry)
                status += " (removed)"
        rows.append(_entry_row(entry)[:-1] + [status])
        report.append({"header": str(entry.header_path), "ok": entry.ok, "status": status})
    orphans = cache.orphans()
    if args.json:
        print(json.dumps({"cache": str(cache.root), "empty": False, "entries": report, "bad": bad, "orphans": [str(p) for p in orphans]}, indent=1))
    else:
        print(f"engine cache {cache.root}: {len(entries)} entries, {bad} bad, {len(orphans)} orphaned files")
        if rows:
            print(_table(HEADERS, rows))
        if bad and not args.remove_bad:
            print("bad entries are rebuilt on next use; `holoburn engine verify --remove-bad` deletes them now")
    return EXIT_FAILED if bad else EXIT_OK


def _cmd_clear(args) -> int:
    cache = EngineCache(args.cache_dir)
    model_sha = None
    if args.model:
        model_sha = load_card(args.model).model_sha256()

    def chosen(entry) -> bool:
        key = entry.key
        backend = str(key.get("backend", ""))
        if args.backend and backend != args.backend and not (args.backend == "onnxruntime" and backend.startswith("onnx-")):
            return False  # converted ONNX models count as onnxruntime's artefacts
        if args.precision and key.get("precision") != args.precision:
            return False
        if model_sha and model_sha not in (key.get("model_sha256"), entry.header.get("meta", {}).get("card_model_sha256")):
            return False
        return True

    everything = not (args.model or args.backend or args.precision)
    removed = cache.clear(None if everything else chosen)
    print(json.dumps({"cache": str(cache.root), "removed": removed}) if args.json else f"removed {removed} entries from {cache.root}")
    return EXIT_OK


def run_engine(args: argparse.Namespace) -> int:
    """Run `holoburn engine <command>` from parsed arguments; returns the exit code (module doc).

    Declared errors (clinical/errors.py) become a message and their declared exit code, as in
    every `holoburn` command (BadInput 2, BackendFailure and BackendUnavailable 3); anything else
    is a defect and keeps its traceback.
    """
    commands = {"build": _cmd_build, "list": _cmd_list, "verify": _cmd_verify, "clear": _cmd_clear}
    try:
        return commands[args.engine_command](args)
    except HoloburnError as exc:
        print(f"holoburn engine {args.engine_command}: error: {exc}", file=sys.stderr)
        return exc.exit_code


def main(argv=None) -> int:  # python -m holoburn.engines.toolchain build ...
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = add_engine_arguments(argparse.ArgumentParser(prog="holoburn engine", description=__doc__.splitlines()[0]))
    return run_engine(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
