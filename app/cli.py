"""The `holoburn` command."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from holoburn.clinical.errors import HoloburnError

STACK_BYTES = 32 * 1024 * 1024  # Holoscan warns below 32 MiB of stack


def _ensure_stack() -> None:
    """Holoscan wants a 32 MiB stack; raise the soft limit and restart once if it is lower.

    The limit is read when a process starts, so it has to be set before this process is begun
    anew (threads created later take their stack size from it).
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft == resource.RLIM_INFINITY or soft >= STACK_BYTES or os.environ.get("HOLOBURN_STACK_RAISED"):
        return
    target = STACK_BYTES if hard == resource.RLIM_INFINITY else min(STACK_BYTES, hard)
    if target <= soft:
        return
    resource.setrlimit(resource.RLIMIT_STACK, (target, hard))
    os.environ["HOLOBURN_STACK_RAISED"] = "1"
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "holoburn.app.cli", *sys.argv[1:]])


def _stack_hint() -> str | None:
    """Holoscan's stack advice, once, where the soft limit stayed below 32 MiB (a hard limit
    keeps it there): the hint is real, deep calls can overflow and crash the run."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft == resource.RLIM_INFINITY or soft >= STACK_BYTES:
        return None
    stopped = f", and its hard limit ({hard >> 20} MiB) stops holoburn raising it" \
        if hard != resource.RLIM_INFINITY and hard < STACK_BYTES else ""
    return (f"the stack limit is {soft >> 20} MiB, below the {STACK_BYTES >> 20} MiB Holoscan recommends (a deep "
            f"call can then crash the run){stopped}: raise it with 'ulimit -s {STACK_BYTES >> 10}' (Docker: "
            f"--ulimit stack={STACK_BYTES})")


def cuda_driver_usable() -> bool:
    """Whether the CUDA driver initialises and sees a device: the check Holoscan makes before
    it warns. Asked of libcuda directly (ctypes): CuPy or cuda-python would cost their import
    before the arguments are read, and cuda-python may warn itself when there is no driver."""
    import ctypes

    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:  # no NVIDIA driver installed
        return False
    count = ctypes.c_int(0)
    return driver.cuInit(0) == 0 and driver.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


HOLOSCAN_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "CRITICAL", "OFF")


def _quiet_holoscan(graph: bool, verbose: bool) -> str | None:
    """What Holoscan and GXF print to the console; returns a stack hint for holoburn to log.

    Holoscan logs warnings and errors (HOLOSCAN_LOG_LEVEL=WARN). On a machine where the CUDA
    driver is missing or sees no device, Holoscan's and GXF's warnings at start-up only say so
    (cudaGetDeviceCount failed, "CPU data only", "GPU not available for Driver APIs"), in C++
    with no message filter: there both are set to ERROR, so errors still show. A level set in
    the environment, or -v, keeps everything. Holoscan's stack-size warning comes from Python
    and C++ alike: the Python one is always filtered, and where the C++ one is silenced too,
    holoburn gives the hint itself (`_stack_hint`), so it appears exactly once.
    """
    import warnings

    warnings.filterwarnings("ignore", message=".*stack size.*", category=RuntimeWarning)
    if graph and not verbose and not cuda_driver_usable():
        os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "ERROR")
        os.environ.setdefault("HOLOSCAN_EXECUTOR_LOG_LEVEL", "ERROR")
    os.environ.setdefault("HOLOSCAN_LOG_LEVEL", "WARN")
    level = os.environ["HOLOSCAN_LOG_LEVEL"].upper()
    holoscan_warns = level in HOLOSCAN_LEVELS and HOLOSCAN_LEVELS.index(level) <= HOLOSCAN_LEVELS.index("WARN")
    return _stack_hint() if graph and not holoscan_warns else None


def _version() -> str:
    from importlib.metadata import version

    return f"holoburn {version('holoburn')}"


# subcommand -> (module under holoburn, adder, runner, help)
SUBCOMMANDS = {
    "demo": ("app.run.command", "add_demo_arguments", "run_demo", "replay the bundled sample burn video end to end"),
    "run": ("app.run.command", "add_run_arguments", "run_run", "segment a video and write overlay, results and summary"),
    "validate": ("app.run.validate", "add_validate_arguments", "run_validate", "replay a recording against ground-truth masks; metrics and report"),
    "convert": ("app.run.convert", "add_convert_arguments", "run_convert", "write a video file as a Holoscan recording (.gxf_entities)"),
    "config": ("app.config_check", "add_config_arguments", "run_config", "check a config file: every unknown key and bad value, with its line"),
    "health": ("app.run.metrics_endpoint", "add_health_arguments", "run_health", "exit 0 while the running pipeline's metrics show recent frames (container health check)"),
    "deid": ("clinical.deid", "add_deid_arguments", "run_deid", "de-identify DICOM files (PS3.15 Annex E basic profile), audited"),
    "audit": ("app.cli", "add_audit_arguments", "run_audit", "check an audit log: holoburn audit verify LOG"),
    "engine": ("engines.toolchain", "add_engine_arguments", "run_engine", "build, list, verify or clear inference engines (fp32/fp16/int8, gated)"),
    "bench": ("app.benchmarks.cpu", "add_bench_arguments", "run_bench", "measure pipeline throughput against a plain loop"),
    "dataset": ("app.datasets.command", "add_dataset_arguments", "run_dataset",
                "import image+mask datasets (folder, COCO, nnU-Net, CVAT) into one layout; split them by case"),
    "synth": ("app.synthesis.synth", "add_synth_arguments", "run_synth", "generate synthetic burn scenes with ground truth"),
    "train": ("app.training.train", "add_train_arguments", "run_train", "train the burn-depth network (needs PyTorch)"),
    "trust": ("app.training.trust", "add_trust_arguments", "run_trust_command",
              "calibrate the out-of-domain threshold; check real photos and unseen scene families"),
}
GRAPH_COMMANDS = {"demo", "run", "bench", "validate", "convert"}


def add_audit_arguments(p):
    from holoburn.clinical.audit import add_verify_arguments

    actions = p.add_subparsers(dest="audit_action", required=True, metavar="ACTION")
    add_verify_arguments(actions.add_parser("verify", help="detect edited, removed, inserted or reordered entries"))


def run_audit(args) -> int:
    from holoburn.clinical.audit import run_verify

    return run_verify(args)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """All subcommands are listed; only `command`'s module is imported to add its options,
    so `holoburn run` never pays for importing PyTorch."""
    parser = argparse.ArgumentParser(
        prog="holoburn",
        description="Burn-depth segmentation on Holoscan. Decision support only; not for diagnosis.",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log more (Holoscan's warnings included, also on a machine without a GPU)")
    parser.add_argument("--version", action="version", version=_version(), help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, adder, runner, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            getattr(importlib.import_module(f"holoburn.{module}"), adder)(p)
        p.set_defaults(_runner=(module, runner))
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:  # Ctrl-C before the run's own handlers: nothing written yet
        print("holoburn: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str]) -> int:
    command = next((a for a in argv if not a.startswith("-")), None)
    graph = command in GRAPH_COMMANDS
    if graph:
        _ensure_stack()
    options = argv[: argv.index(command)] if command else argv  # holoburn's own, before the subcommand
    stack_hint = _quiet_holoscan(graph, verbose=bool({"-v", "--verbose"} & set(options)))
    if command == "bench" and "--peer" in argv and "--cpu" not in argv:  # the GPU peer: its own options
        from holoburn.app.benchmarks.peer import main as peer_main

        try:
            return peer_main([a for a in argv[argv.index(command) + 1:] if a != "--peer"])
        except HoloburnError as exc:  # a missing or bad model card
            print(f"holoburn bench --peer: error: {exc}", file=sys.stderr)
            return exc.exit_code
    parser = build_parser(command)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if stack_hint:
        logging.getLogger("holoburn").warning("%s", stack_hint)
    module, runner = args._runner
    try:
        status = getattr(importlib.import_module(f"holoburn.{module}"), runner)(args)
        return status if isinstance(status, int) else 0
    except HoloburnError as exc:  # declared errors (clinical/errors.py): a message and an exit code, no traceback
        print(f"holoburn {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
