#!/usr/bin/env bash
# Entrypoint of the holoburn images (Dockerfile, Dockerfile.jetson): set the stack size Holoscan
# wants, check that the engine cache is writable, check the config file, say when a TensorRT
# engine will be built first, then run holoburn with the container's arguments (`docker run IMAGE run --config ... --source ... --out ...`).
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

# A bad config fails here, with every problem and its line, before a camera or GPU is opened.
config="" backend=""
previous=""
for arg in "$@"; do
    case "$arg" in
        --config=*) config="${arg#--config=}"; holoburn config check "$config" ;;
        --backend=*) backend="${arg#--backend=}" ;;
        *) case "$previous" in
               --config) config="$arg"; holoburn config check "$config" ;;
               --backend) backend="$arg" ;;
           esac ;;
    esac
    previous="$arg"
done

# Only a TensorRT backend builds an engine on first start (ONNX Runtime and torch need none).
# The backend is --backend, else the config's inference.backend (holoburn's own loader reads it,
# presets by name included); `auto` is TensorRT where a TensorRT package is installed.
if [ -z "$backend" ]; then
    backend=$(python3 -c 'import sys; from holoburn.app.config import load_config
print(load_config(sys.argv[1] or None)["inference"]["backend"])' "$config" 2>/dev/null) || backend=auto
fi
if [ "$backend" = auto ] && python3 -c 'import importlib.util as u, sys
sys.exit(not (u.find_spec("tensorrt") or u.find_spec("tensorrt_rtx_bindings")))' 2>/dev/null; then
    backend=tensorrt
fi
if [[ "$backend" == tensorrt* ]] && [ -z "$(ls -A "$cache")" ]; then
    echo "holoburn: the engine cache $cache is empty: the first run builds the $backend engine" \
         "for this GPU, which takes minutes; later starts reuse it" >&2
fi

# Cache entries are signed with a key kept outside the cache (engines/cache.py): without it, what
# is cached cannot be trusted and is rebuilt. The key must outlive the container, like the cache.
key="${HOLOBURN_CACHE_KEY:-${XDG_CONFIG_HOME:-$HOME/.config}/holoburn/cache.key}"
if [ -n "$(ls -A "$cache")" ] && [ ! -f "$key" ]; then
    echo "holoburn: the engine cache $cache has entries but there is no cache key $key: they cannot" \
         "be authenticated and are rebuilt; mount a volume at $(dirname "$key") or point" \
         "HOLOBURN_CACHE_KEY at a mounted secret so that later starts reuse them" >&2
fi

exec holoburn "$@"
