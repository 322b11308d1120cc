#!/usr/bin/env bash
# Entrypoint of the holoburn images (Dockerfile, Dockerfile.jetson): set the stack size Holoscan
# wants, check that the engine cache is writable, check the config file, then run holoburn with
# the container's arguments (`docker run IMAGE run --config ... --source ... --out ...`).
set -euo pipefail

# Holoscan warns (and can crash) below a 32 MiB stack. Run the container with
# `--ulimit stack=33554432`; where the hard limit allows it, this raises the soft limit anyway.
if ! ulimit -s 32768 2>/dev/null; then
    echo "holoburn: cannot raise the stack limit to 32 MiB (it is $(ulimit -s) KiB);" \
         "run the container with --ulimit stack=33554432" >&2
fi

# Engines are built for the GPU they run on, on first start, into a mounted volume: never baked
# into the image, where they would be stale on any other GPU or driver.
cache="${HOLOBURN_ENGINE_CACHE:?HOLOBURN_ENGINE_CACHE must name the engine cache directory}"
mkdir -p "$cache" 2>/dev/null || true
if [ ! -w "$cache" ]; then
    echo "holoburn: the engine cache $cache is not writable by uid $(id -u);" \
         "mount a volume there (-v holoburn-engines:$cache) or chown a host directory to that uid" >&2
    exit 1
fi
if [ -z "$(ls -A "$cache")" ]; then
    echo "holoburn: the engine cache $cache is empty: the first run builds the TensorRT engine" \
         "for this GPU, which takes minutes; later starts reuse it" >&2
fi

# A bad config fails here, with every problem and its line, before a camera or GPU is opened.
previous=""
for arg in "$@"; do
    case "$arg" in
        --config=*) holoburn config check "${arg#--config=}" ;;
        *) if [ "$previous" = "--config" ]; then holoburn config check "$arg"; fi ;;
    esac
    previous="$arg"
done

exec holoburn "$@"
