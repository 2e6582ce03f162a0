# shellcheck shell=bash disable=SC2034  # variables are for the sourcing script
# Shared helpers for infergate's shell scripts. Source it; do not execute it:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Sets REPO_ROOT and CACHE, and defines log/warn/die, sha256_of, need_root_cmd,
# apt_ensure (install missing Debian packages) and free_port.

# Repository root: the parent of scripts/.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The ONNX graph builder the model converters import (scripts/onnx_graph.py):
# its checksum is part of their conversion stamps.
GRAPH_LIB="$REPO_ROOT/scripts/onnx_graph.py"
# Checksum-keyed cache that lives outside the clone and survives `git clean`.
CACHE="${INFERGATE_CACHE:-${HOME:-/root}/.cache/infergate}"
# Interpreter used for venvs and helpers (pyenv shims work too).
PYTHON="${PYTHON:-python3}"

log()  { printf '[%s] %s\n' "${LOG_TAG:-infergate}" "$*" >&2; }
warn() { printf '[%s] warning: %s\n' "${LOG_TAG:-infergate}" "$*" >&2; }
die()  { printf '[%s] error: %s\n' "${LOG_TAG:-infergate}" "$*" >&2; exit 1; }

# sha256_of FILE -> hex digest on stdout.
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# verify_sha256 FILE EXPECTED -> dies on mismatch.
verify_sha256() {
    local got
    got="$(sha256_of "$1")"
    [[ "$got" == "$2" ]] || die "checksum mismatch for $1: expected $2, got $got"
}

# Run a command as root: directly when we are root, else through sudo.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $* (run as root or install sudo)"
    fi
}

# True when the Debian package is fully installed (not just known to dpkg).
deb_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == "installed" ]]
}

# apt_ensure PKG... -> installs only the missing packages; runs `apt-get update`
# only when something is missing. Non-interactive, no recommends.
apt_ensure() {
    local missing=() p
    for p in "$@"; do
        deb_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null 2>&1 \
        || die "missing packages (${missing[*]}) and no apt-get: install them by hand"
    log "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# free_port -> an unused TCP port on 127.0.0.1 (the kernel picks it).
free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# bench_workspace NAME: a fresh $TMP directory and an empty $PIDS array; on
# exit every process in PIDS gets SIGTERM, up to 3 s to finish, then SIGKILL,
# and $TMP is removed. Scripts add what they start with PIDS+=("$!").
bench_workspace() {
    TMP="$(mktemp -d -t "infergate-$1.XXXXXX")"
    PIDS=()
    trap bench_cleanup EXIT
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
bench_cleanup() {
    local pid i
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for ((i = 0; i < 30; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}

# proc_ticks PID [user|system] -> utime+stime (clock ticks) of PID plus all its
# descendants (nginx serves from worker processes), or only the user or the
# kernel share. Fields 14/15 of /proc/PID/stat, counted after the ")" that
# ends the command name.
proc_ticks() {
    local stat rest total child kids
    local -a f
    stat="$(<"/proc/$1/stat")" || { echo 0; return; }
    rest="${stat##*) }"
    read -r -a f <<<"$rest"
    case "${2:-}" in
        user) total=$((f[11])) ;;
        system) total=$((f[12])) ;;
        *) total=$((f[11] + f[12])) ;;
    esac
    kids="$(cat /proc/"$1"/task/*/children 2>/dev/null || true)"
    for child in $kids; do
        total=$((total + $(proc_ticks "$child" "${2:-}")))
    done
    echo "$total"
}

# The benchmarks' tenant: "web", interactive, key sk-infergate-test (only its
# SHA-256 in the config).
bench_tenant_toml() {
    cat <<TOML
[[tenants]]
name = "web"
class = "interactive"
api_key_sha256 = ["3b978aa9b13194c6acccdc77d6d65ded5407e7e4fd82b5647e744e3427d71df4"]
TOML
}

# The remote benchmarks' gateway (bench-failover.sh, bench-routing.sh): the
# benchmarks' tenant and model "remote" in front of three upstreams, with
# BACKEND_EXTRA (", key = value, ...") added to its backend table.
three_upstreams_toml() { # URL1 URL2 URL3 BACKEND_EXTRA
    bench_tenant_toml
    cat <<TOML

[[models]]
name = "remote"
task = "chat"
concurrency = 256
batch = { max_size = 1 }
backend = { kind = "openai", endpoints = ["$1", "$2", "$3"], upstream_model = "fake-model"$4 }
TOML
}

# The proxy benchmarks' shared pieces (bench-proxy*.sh): the infergate config
# with model "remote" in front of one upstream, and Envoy's equivalent.
proxy_infergate_toml() { # UPSTREAM_PORT
    bench_tenant_toml
    cat <<TOML

[[models]]
name = "remote"
task = "chat"
concurrency = 1024
batch = { max_size = 1 }
queue = { max_jobs = 4096, max_bytes = 67108864 }
backend = { kind = "openai", endpoints = ["http://127.0.0.1:$1"], replica_concurrency = 1024 }
TOML
}

proxy_envoy_yaml() { # LISTEN_PORT UPSTREAM_PORT
    cat <<YAML
static_resources:
  listeners:
  - address: { socket_address: { address: 127.0.0.1, port_value: $1 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{ match: { prefix: "/" }, route: { cluster: up } }]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: up
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: up
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $2 } } } }] }]
YAML
}
