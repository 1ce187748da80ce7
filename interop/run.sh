#!/usr/bin/env bash
# Real clients against the real binary: the OpenAI Python and Node SDKs, the Vercel AI SDK,
# LangChain, Codex CLI and curl, installed from their registries at the versions pinned here
# (requirements*.txt, package-lock.json), talking to trae-proxy on loopback, which forwards to
# `trae-proxy mock --strict` and, unless INTEROP_LITELLM=0, to LiteLLM's proxy with a mock model.
#
#   interop/run.sh                                   # build if needed, install, run, summarise
#   INTEROP_LITELLM=0 interop/run.sh                 # without LiteLLM (saves its ~1 min install)
#   TRAE_PROXY_BIN=dist/trae-proxy-x86_64-unknown-linux-musl interop/run.sh   # another build
#   INTEROP_VERBOSE=1 interop/run.sh                 # tracebacks and logs of failed checks
#
# Each client runs in the modes its users use:
#   default  its default base URL, https://api.openai.com/v1, reaching the proxy by a hosts-file
#            entry: in a network namespace of our own whose /etc/hosts (ip netns exec mounts
#            /etc/netns/NAME/hosts) maps api.openai.com to 127.0.0.1. Needs root; without it
#            this mode is skipped and said so.
#   base     base URL http://127.0.0.1:PORT/v1, the plain-HTTP listener (server.http_bind)
#   connect  HTTPS_PROXY=http://127.0.0.1:PORT: CONNECT api.openai.com:443, intercepted
# Installs go to interop/.cache (INTEROP_CACHE), reused while the pins are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HERE=$ROOT/interop
CACHE=${INTEROP_CACHE:-$HERE/.cache}
LITELLM=${INTEROP_LITELLM:-1}
KEY=sk-interop-test-key
SECONDS=0

MOCK_BIN=$ROOT/target/debug/trae-proxy
[ -x "$MOCK_BIN" ] || cargo build -q
BIN=${TRAE_PROXY_BIN:-$MOCK_BIN}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

say() { printf '\n--- %s (%ss)\n' "$1" "$SECONDS"; }

# --- Install the clients (each step skipped while its pins are unchanged).
stamp_ok() { [ -f "$1/.pins" ] && [ "$(cat "$1/.pins")" = "$2" ]; }
say "clients"
mkdir -p "$CACHE"
pins=$(cat "$HERE/requirements.txt")
if ! stamp_ok "$CACHE/venv" "$pins"; then
    rm -rf "$CACHE/venv" && python3 -m venv "$CACHE/venv"
    "$CACHE/venv/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt"
    printf '%s' "$pins" > "$CACHE/venv/.pins"
fi
pins=$(cat "$HERE/package.json" "$HERE/package-lock.json")
if ! stamp_ok "$CACHE/node" "$pins"; then
    rm -rf "$CACHE/node" && mkdir -p "$CACHE/node"
    cp "$HERE/package.json" "$HERE/package-lock.json" "$CACHE/node/"
    (cd "$CACHE/node" && npm ci --no-audit --no-fund --loglevel=error)
    printf '%s' "$pins" > "$CACHE/node/.pins"
fi
if [ "$LITELLM" = 1 ]; then
    pins=$(cat "$HERE/requirements-litellm.txt")
    if ! stamp_ok "$CACHE/litellm" "$pins"; then
        rm -rf "$CACHE/litellm" && python3 -m venv "$CACHE/litellm"
        "$CACHE/litellm/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements-litellm.txt"
        printf '%s' "$pins" > "$CACHE/litellm/.pins"
    fi
fi
# ES modules resolve packages next to the script: run it from the install.
cp "$HERE/clients.mjs" "$CACHE/node/"
PY=$CACHE/venv/bin/python
CODEX=$CACHE/node/node_modules/.bin/codex
echo "python: $("$PY" -c 'import openai, langchain_openai; print("openai", openai.__version__)'), $("$CODEX" --version), curl $(curl --version | head -1 | cut -d' ' -f2)"

# --- Where everything runs: our own network namespace when we may make one.
WORK=$(mktemp -d)
NS=
IN=()
PIDS=()
cleanup() {
    # Each server runs in a process group of its own (setsid): the group goes, children too.
    for pid in "${PIDS[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "$NS" ]; then
        ip netns del "$NS" 2>/dev/null || true
        rm -rf "/etc/netns/$NS"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null && ip netns add "trae-interop-$$" 2>/dev/null; then
    NS=trae-interop-$$
    mkdir -p "/etc/netns/$NS"
    # api.openai.com is the proxy; the other hosts Codex asks (model list, update check) fail at
    # once instead of waiting on an unreachable DNS server.
    printf '127.0.0.1 localhost\n127.0.0.1 api.openai.com\n127.0.0.2 chatgpt.com ab.chatgpt.com api.github.com\n' \
        > "/etc/netns/$NS/hosts"
    IN=(ip netns exec "$NS")
    "${IN[@]}" ip link set lo up
    TLS_PORT=443 HTTP_PORT=8080 MOCK_PORT=8000 LL_PORT=4000
    MODES=(default base connect)
else
    echo "not root or no 'ip netns': the default-URL mode (hosts-file entry) is skipped"
    free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
    TLS_PORT=$(free_port) HTTP_PORT=$(free_port) MOCK_PORT=$(free_port) LL_PORT=$(free_port)
    MODES=(base connect)
fi
in_ns() { "${IN[@]}" "$@"; }
wait_for() { # URL: up to 60 s
    for _ in $(seq 1 300); do
        in_ns curl -s -o /dev/null "$1" && return 0
        sleep 0.2
    done
    echo "not up: $1" >&2
    return 1
}

# --- Backends and the proxy.
say "backends and proxy"
# Started directly (not through the in_ns function, whose subshell would be what $! names).
setsid "${IN[@]}" "$MOCK_BIN" mock --strict --port "$MOCK_PORT" --tokens-per-second 0 > "$WORK/mock.log" 2>&1 &
PIDS+=($!)
ll_entry=
if [ "$LITELLM" = 1 ]; then
    setsid "${IN[@]}" "$CACHE/litellm/bin/litellm" --config "$HERE/litellm.yaml" --host 127.0.0.1 \
        --port "$LL_PORT" > "$WORK/litellm.log" 2>&1 &
    PIDS+=($!)
    ll_entry="  - {name: litellm, endpoint: \"http://127.0.0.1:$LL_PORT\", custom_model_id: ll-mock, target_model_id: ll-mock}"
fi
cat > "$WORK/config.yaml" <<EOF
domain: api.openai.com
apis:
  - {name: mock, endpoint: "http://127.0.0.1:$MOCK_PORT", custom_model_id: gpt-4o-mini, target_model_id: mock-model}
$ll_entry
  - {name: mock-any, endpoint: "http://127.0.0.1:$MOCK_PORT", custom_model_id: "*"}
server:
  port: $TLS_PORT
  bind: 127.0.0.1
  http_bind: 127.0.0.1:$HTTP_PORT
EOF
setsid "${IN[@]}" "$BIN" serve --config "$WORK/config.yaml" > "$WORK/proxy.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$MOCK_PORT/v1/models"
wait_for "http://127.0.0.1:$HTTP_PORT/v1/models"
[ "$LITELLM" = 1 ] && wait_for "http://127.0.0.1:$LL_PORT/health/liveliness"
CA=$WORK/ca/ca.crt
# Python's SSL_CERT_FILE and Codex's CODEX_CA_CERTIFICATE replace the trust store: give them
# the system's roots plus the proxy's CA, as docs/clients.md recommends.
cat /etc/ssl/certs/ca-certificates.crt "$CA" > "$WORK/bundle.pem" 2>/dev/null || cp "$CA" "$WORK/bundle.pem"

RESULTS=$WORK/results.txt
: > "$RESULTS"
record() { tee -a "$RESULTS"; }
result() { # ok|FAIL client mode check [why]
    echo "$*" | record
}

# The environment of a client in a mode: nothing inherited that could reroute it.
mode_env() {
    local mode=$1
    echo "env -u HTTPS_PROXY -u https_proxy -u HTTP_PROXY -u http_proxy -u NO_PROXY -u no_proxy -u ALL_PROXY"
    echo "-u OPENAI_BASE_URL -u SSL_CERT_FILE -u REQUESTS_CA_BUNDLE INTEROP_MODE=$mode OPENAI_API_KEY=$KEY"
    case $mode in
        default) echo "SSL_CERT_FILE=$WORK/bundle.pem NODE_EXTRA_CA_CERTS=$CA CODEX_CA_CERTIFICATE=$WORK/bundle.pem" ;;
        base) echo "OPENAI_BASE_URL=http://127.0.0.1:$HTTP_PORT/v1" ;;
        # Codex's other hosts (model list, update check) go direct and fail at once, instead of
        # through the proxy's CONNECT, which cannot reach them from here and is retried for long.
        connect) echo "HTTPS_PROXY=http://127.0.0.1:$HTTP_PORT SSL_CERT_FILE=$WORK/bundle.pem CODEX_CA_CERTIFICATE=$WORK/bundle.pem"
                 echo "NO_PROXY=chatgpt.com,ab.chatgpt.com,api.github.com" ;;
    esac
}
run_client() { # mode command...
    local mode=$1
    shift
    # shellcheck disable=SC2046 # the words of mode_env are meant to split
    in_ns $(mode_env "$mode") "$@" 2>"$WORK/client.err" | record || {
        [ -n "${INTEROP_VERBOSE:-}" ] && cat "$WORK/client.err"
        true
    }
}

# --- SDKs.
for mode in "${MODES[@]}"; do
    say "python SDK and LangChain, $mode"
    run_client "$mode" "$PY" "$HERE/clients.py" openai langchain
    if [ "$mode" != connect ]; then
        # Node 20's fetch ignores HTTPS_PROXY: no CONNECT mode for the Node clients.
        say "Node SDK and Vercel AI SDK, $mode"
        run_client "$mode" node "$CACHE/node/clients.mjs"
    fi
done
if [ "$LITELLM" = 1 ]; then
    say "LiteLLM as the backend"
    run_client base "$PY" "$HERE/clients.py" litellm
fi

# --- Codex CLI: exec mode, a custom provider in base mode, its built-in OpenAI provider in the
# default and connect modes (which first tries a WebSocket: one 426, then HTTP at once).
codex_check() { # mode home
    local mode=$1 home=$2 out
    local before
    before=$(grep -c 'GET /v1/responses status=426' "$WORK/proxy.log" || true)
    # shellcheck disable=SC2046
    local t0=$SECONDS
    out=$(cd "$WORK" && in_ns $(mode_env "$mode") CODEX_HOME="$home" TRAE_INTEROP_KEY=$KEY \
        timeout 120 "$CODEX" exec --skip-git-repo-check "say hello to codex" 2>&1 || true)
    echo "codex $mode: $((SECONDS - t0))s"
    if grep -q "Mock reply to: say hello to codex" <<<"$out"; then
        result "ok   codex $mode exec"
    else
        result "FAIL codex $mode exec: $(tail -3 <<<"$out" | tr '\n' ' ' | cut -c1-300)"
    fi
    if [ "$mode" = default ]; then
        local probes
        probes=$(( $(grep -c 'GET /v1/responses status=' "$WORK/proxy.log" || true) - before ))
        if [ "$probes" = 1 ] && grep -q 'GET /v1/responses status=426' "$WORK/proxy.log"; then
            result "ok   codex $mode websocket-probe-once"
        else
            result "FAIL codex $mode websocket-probe-once: $probes WebSocket attempts (want 1, answered 426)"
        fi
    fi
}
say "Codex CLI"
mkdir -p "$WORK/codex-base" "$WORK/codex-openai"
cat > "$WORK/codex-base/config.toml" <<EOF
model = "gpt-4o-mini"
model_provider = "trae"
[model_providers.trae]
name = "trae-proxy"
base_url = "http://127.0.0.1:$HTTP_PORT/v1"
env_key = "TRAE_INTEROP_KEY"
wire_api = "responses"
EOF
codex_check base "$WORK/codex-base"
echo "$KEY" | CODEX_HOME="$WORK/codex-openai" "$CODEX" login --with-api-key > /dev/null 2>&1
for mode in "${MODES[@]}"; do
    [ "$mode" = base ] || codex_check "$mode" "$WORK/codex-openai"
done

# --- curl: HTTP/1.0, 1.1, and HTTP/2 offered (ALPN falls back to 1.1), streaming.
say "curl"
if [ -n "$NS" ]; then
    url=https://api.openai.com
    resolve=()
else
    url=https://api.openai.com:$TLS_PORT
    resolve=(--resolve "api.openai.com:$TLS_PORT:127.0.0.1")
fi
curl_check() { # name expected-output curl-args...
    local name=$1 want=$2 got
    shift 2
    got=$(in_ns curl -sS --max-time 20 --cacert "$CA" "${resolve[@]}" "$@" 2>&1 || true)
    if [ "$got" = "$want" ]; then
        result "ok   curl tls $name"
    else
        result "FAIL curl tls $name: expected '$want', got '$(echo "$got" | tr '\n' ' ' | cut -c1-200)'"
    fi
}
curl_check http1.0 "200 1" --http1.0 -o /dev/null -w '%{http_code} %{http_version}' "$url/v1/models"
curl_check http1.1 "200 1.1" --http1.1 -o /dev/null -w '%{http_code} %{http_version}' "$url/v1/models"
curl_check http2-falls-back "200 1.1" --http2 -o /dev/null -w '%{http_code} %{http_version}' "$url/v1/models"
chat='{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"a b c d"}]}'
in_ns curl -sS -N --max-time 20 --cacert "$CA" "${resolve[@]}" -H 'content-type: application/json' \
    -d "$chat" -o "$WORK/stream.txt" "$url/v1/chat/completions" 2>/dev/null || true
events=$(grep -c '^data: ' "$WORK/stream.txt" || true)
if [ "$(grep '^data: ' "$WORK/stream.txt" | tail -1)" = "data: [DONE]" ] && [ "$events" -ge 6 ]; then
    result "ok   curl tls stream"
else
    result "FAIL curl tls stream: $events events, last: $(tail -c 100 "$WORK/stream.txt" | tr '\n' ' ')"
fi
got=$(in_ns curl -sS --max-time 20 -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$HTTP_PORT" --cacert "$CA" \
    https://api.openai.com/v1/models 2>&1 || true)
[ "$got" = 200 ] && result "ok   curl connect models" || result "FAIL curl connect models: $got"
got=$(in_ns curl -sS --max-time 20 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/v1/models" 2>&1 || true)
[ "$got" = 200 ] && result "ok   curl base models" || result "FAIL curl base models: $got"

# --- The command line as the README shows it.
say "command line"
if "$BIN" api list --config "$WORK/config.yaml" | grep -q mock-any; then
    result "ok   cli - api-list-config-after-action"
else
    result "FAIL cli - api-list-config-after-action"
fi
# `trae-proxy --help | head -1`: the reader is gone before the first write (its end of the pipe is
# closed before the command starts), so the write fails with EPIPE every time.
pipe=$(python3 -c '
import os, subprocess, sys
r, w = os.pipe(); os.close(r)
p = subprocess.run([sys.argv[1], "--help"], stdout=w, stderr=subprocess.PIPE)
print(p.returncode, p.stderr.decode()[:200].replace("\n", " "))' "$BIN")
[ "${pipe%% *}" = 0 ] && result "ok   cli - closed-pipe-exits-0" || result "FAIL cli - closed-pipe-exits-0: $pipe"

# --- Summary.
say "summary"
ok=$(grep -c '^ok ' "$RESULTS" || true)
failed=$(grep -c '^FAIL ' "$RESULTS" || true)
printf '%-14s %-8s %s\n' client mode "checks (ok/all)"
awk '{k=$2" "$3; all[k]++; if ($1=="ok") good[k]++} END {for (k in all) {split(k,p," "); printf "%-14s %-8s %d/%d\n", p[1], p[2], good[k], all[k]}}' "$RESULTS" | sort
echo "$ok passed, $failed failed in ${SECONDS}s (modes: ${MODES[*]}; LiteLLM: $([ "$LITELLM" = 1 ] && echo yes || echo no))"
if [ "$failed" != 0 ]; then
    grep '^FAIL ' "$RESULTS"
    echo "--- proxy log (last 30 lines)"
    tail -30 "$WORK/proxy.log"
    exit 1
fi
