#!/usr/bin/env bash
# Issue 13's swap latency for a peer: the same load and the same container swaps, with
# nginx or haproxy as the proxy and this script as the platform (no Slipway), one run.
#
# The static-site example is built once as an image. Its containers run as Slipway runs
# instances (docker-init, no-new-privileges, Slipway's capabilities, a pids limit, a port
# published on 127.0.0.1) on a bridge network of the script's own with inter-container
# communication off, so the engine's work per swap is Slipway's. bench/swapload.py offers
# 200 GET/s through the proxy: STEADY_S seconds with no change, then SWAPS swaps back to
# back, each: create and start a container through the Docker API, poll its port every
# 100 ms until it answers 200, point the proxy at it, wait 200 ms for in-flight requests,
# stop and remove the old container.
#   PEER=nginx:   the upstream file rewritten and `nginx -s reload` (how Dokku swaps);
#   PEER=haproxy: the server's address changed over the runtime API socket, no reload
#                 (in-process, as kamal-proxy or Traefik swap).
# Prints the same figures as bench/swaps.sh, so the two can be set side by side.
#
#   PEER=nginx bench/swaps_peer.sh
#   PEER=haproxy SWAPS=10 bench/swaps_peer.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
PEER="${PEER:-nginx}"
SWAPS="${SWAPS:-20}"
STEADY_S="${STEADY_S:-20}"
NET="slipway-peer-$RUN_ID"
PROXY_PID=""
peer_cleanup() {
    local rc=$? ids
    set +e
    [[ -z "$PROXY_PID" ]] || kill "$PROXY_PID" 2>/dev/null || true
    pkill -f "$TMP/nginx.conf" 2>/dev/null
    ids="$(docker ps -aq --filter "label=slipway.bench=$RUN_ID")"
    [[ -z "$ids" ]] || docker rm -f $ids > /dev/null
    docker network rm "$NET" > /dev/null 2>&1
    (exit "$rc") # lib.sh's cleanup exits with the status it is called with
    cleanup
}
trap peer_cleanup EXIT
[[ "$PEER" == nginx || "$PEER" == haproxy ]] || die "PEER is nginx or haproxy"
log "$(machine_state)"

SITE="$TMP/site"
make_site_repo "$SITE"
IMAGE="slipway-peer-bench:$RUN_ID"
bare_build "$SITE" "$IMAGE"
docker network create --label "slipway.bench=$RUN_ID" -o com.docker.network.bridge.enable_icc=false "$NET" > /dev/null
CAPS="$(sed -n '/^pub const INSTANCE_CAPS/,/^];/p' "$ROOT/runtime/src/lib.rs" | grep -o '"[A-Z_]*"' | tr -d '"' | paste -sd,)"
PIDS_LIMIT="$(sed -n 's/^pub const INSTANCE_PIDS_LIMIT: i64 = \([0-9_]*\);.*/\1/p' "$ROOT/runtime/src/lib.rs" | tr -d _)"
[[ -n "$CAPS" && -n "$PIDS_LIMIT" ]] || die "could not read INSTANCE_CAPS and INSTANCE_PIDS_LIMIT from runtime/src/lib.rs"

# The platform: one Python process talks to the engine over its socket (as Slipway does,
# with no docker CLI forked per step) and to the proxy. `first` starts the first container
# and prints its port; `swaps` makes the swaps.
cat > "$TMP/platform.py" <<'PY'
import http.client, json, os, socket, subprocess, sys, time
run_id, image, net, caps, pids, peer, tmp = sys.argv[1:8]
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect("/var/run/docker.sock")
def docker(method, path, body=None):
    c = Unix("localhost", timeout=60)
    c.request(method, path, None if body is None else json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse(); data = r.read(); c.close()
    if r.status >= 300: sys.exit(f"{method} {path}: {r.status} {data[:200]}")
    return json.loads(data) if data else None
def start():
    cid = docker("POST", "/containers/create", {
        "Image": image, "Labels": {"slipway.bench": run_id}, "ExposedPorts": {"8080/tcp": {}},
        "HostConfig": {"Init": True, "SecurityOpt": ["no-new-privileges"], "CapDrop": ["ALL"],
                       "CapAdd": caps.split(","), "PidsLimit": int(pids), "NetworkMode": net,
                       "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}}})["Id"]
    docker("POST", f"/containers/{cid}/start")
    port = int(docker("GET", f"/containers/{cid}/json")["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
    for _ in range(300):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2); c.request("GET", "/")
            if c.getresponse().status == 200: c.close(); return cid, port
        except OSError: pass
        time.sleep(0.1)
    sys.exit(f"container {cid[:12]} never answered")
def point(port):
    if peer == "nginx":
        with open(f"{tmp}/upstream.conf.new", "w") as f: f.write(f"server 127.0.0.1:{port};\n")
        os.replace(f"{tmp}/upstream.conf.new", f"{tmp}/upstream.conf")
        subprocess.run(["/usr/sbin/nginx", "-p", tmp, "-c", f"{tmp}/nginx.conf", "-s", "reload"], check=True)
    else:
        s = socket.socket(socket.AF_UNIX); s.connect(f"{tmp}/haproxy.sock")
        s.sendall(f"set server app/s1 addr 127.0.0.1 port {port}\n".encode()); answer = s.recv(4096); s.close()
        if b"changed" not in answer and b"no need" not in answer: sys.exit(f"haproxy: {answer!r}")
if sys.argv[8] == "first":
    cid, port = start()
    open(f"{tmp}/current", "w").write(cid); print(port)
else:
    old = open(f"{tmp}/current").read()
    for _ in range(int(sys.argv[9])):
        cid, port = start()
        point(port)
        time.sleep(0.2)
        docker("POST", f"/containers/{old}/stop?t=10"); docker("DELETE", f"/containers/{old}")
        old = cid
PY
platform() { python3 "$TMP/platform.py" "$RUN_ID" "$IMAGE" "$NET" "$CAPS" "$PIDS_LIMIT" "$PEER" "$TMP" "$@"; }
PORT0="$(platform first)"
PROXY_PORT="$(free_port)"
if [[ "$PEER" == nginx ]]; then
    echo "server 127.0.0.1:$PORT0;" > "$TMP/upstream.conf"
    cat > "$TMP/nginx.conf" <<NGINX
daemon off;
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    upstream app { include $TMP/upstream.conf; }
    server {
        listen 127.0.0.1:$PROXY_PORT;
        location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
NGINX
    /usr/sbin/nginx -p "$TMP" -c "$TMP/nginx.conf" & PROXY_PID=$!
else
    cat > "$TMP/haproxy.cfg" <<HAPROXY
global
    stats socket $TMP/haproxy.sock level admin
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend web
    bind 127.0.0.1:$PROXY_PORT
    default_backend app
backend app
    server s1 127.0.0.1:$PORT0
HAPROXY
    /usr/sbin/haproxy -f "$TMP/haproxy.cfg" -db & PROXY_PID=$!
fi
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$PROXY_PORT/" && break; sleep 0.1; done
curl -fs -o /dev/null "http://127.0.0.1:$PROXY_PORT/" || die "$PEER never answered"

STOP="$TMP/stop"
python3 "$ROOT/bench/swapload.py" 127.0.0.1 "$PROXY_PORT" peer "$STOP" 900 > "$TMP/lat.tsv" 2> "$TMP/load.err" &
LOAD_PID=$!
sleep "$STEADY_S"
SWAP_START="$(python3 -c 'import time; print(time.time())')"
platform swaps "$SWAPS" || die "swaps failed"
SWAP_END="$(python3 -c 'import time; print(time.time())')"
touch "$STOP"
wait "$LOAD_PID"
cat "$TMP/load.err" >&2

python3 "$ROOT/bench/swapreport.py" "$TMP/lat.tsv" "$SWAP_START" "$SWAP_END" "$SWAPS swaps with $PEER as the proxy"
