#!/usr/bin/env python3
"""The tight bare floor for bench/coldstart.sh: one process, no CLI start-up in the timing.

    floor.py start|unpause CONTAINER_ID MARKER [TIMEOUT_S]
    floor.py run IMAGE MARKER [TIMEOUT_S] LABEL=VALUE
    floor.py clone INSPECT.json MARKER [TIMEOUT_S] LABEL=VALUE

Times, with time.monotonic(), from just before the Engine API call (POST
/containers/{id}/start or /unpause over /var/run/docker.sock; for `run`, POST
/containers/create with Init and 127.0.0.1::8080, labelled LABEL=VALUE, then start: what
Slipway does for a new instance) to the first HTTP 200 whose body contains MARKER from
127.0.0.1:<published port of 8080/tcp> (for start and run, read with GET
/containers/{id}/json after the start, as Slipway does). `run` prints "ms container-id";
the caller removes the container. `clone` is `run` with the configuration of another
container (`docker inspect` output: its image, command, environment, user, host config
with limits, capabilities and init, and its networks), so the floor is the engine's
create + start of exactly the container Slipway makes, port published on 127.0.0.1 the
same way. Polls with raw sockets and no
sleep, bounded by TIMEOUT_S (default 30) and 100,000 attempts. Prints milliseconds.
Standard library only; traffic to 127.0.0.1 and the Docker socket only.
"""

import http.client
import json
import socket
import sys
import time


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(self.path)
        self.sock = s


def engine(method, url, body=None):
    c = UnixHTTPConnection("/var/run/docker.sock")
    headers = {"Content-Type": "application/json"} if body is not None else {}
    c.request(method, url, body=None if body is None else json.dumps(body), headers=headers)
    r = c.getresponse()
    body = r.read()
    c.close()
    if r.status >= 300:
        raise SystemExit(f"engine {method} {url}: {r.status} {body[:200]!r}")
    return body


def published_port(cid):
    info = json.loads(engine("GET", f"/containers/{cid}/json"))
    return int(info["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])


def get(port, marker):
    """One attempt: True on a 200 containing marker."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            data = b""
            while len(data) < 1 << 20:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    return data.startswith(b"HTTP/1.") and data[9:12] == b"200" and marker in data


def main():
    action, cid, marker = sys.argv[1], sys.argv[2], sys.argv[3].encode()
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else 30.0
    if action not in ("start", "unpause", "run", "clone"):
        raise SystemExit("action: start, unpause, run or clone")
    template = None
    if action == "clone":
        with open(cid) as f:
            template = json.load(f)[0]
    port = published_port(cid) if action == "unpause" else None
    t0 = time.monotonic()
    if action in ("run", "clone"):
        key, _, value = sys.argv[5].partition("=")
        spec = {
            "Image": cid,
            "Labels": {key: value},
            "ExposedPorts": {"8080/tcp": {}},
            "HostConfig": {
                "Init": True,
                "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]},
            },
        }
        if template is not None:
            cfg = template["Config"]
            for k in ("Image", "Cmd", "Entrypoint", "Env", "User", "WorkingDir",
                      "ExposedPorts", "StopSignal"):
                if cfg.get(k) is not None:
                    spec[k] = cfg[k]
            hc = dict(template["HostConfig"])
            hc["PortBindings"] = {p: [{"HostIp": "127.0.0.1", "HostPort": ""}]
                                  for p in (hc.get("PortBindings") or {"8080/tcp": None})}
            spec["HostConfig"] = hc
            spec["NetworkingConfig"] = {"EndpointsConfig": {
                n: {} for n in template["NetworkSettings"]["Networks"]}}
        cid = json.loads(engine("POST", "/containers/create", spec))["Id"]
        action = "start"
        suffix = f" {cid}"
    else:
        suffix = ""
    engine("POST", f"/containers/{cid}/{action}")
    if port is None:
        port = published_port(cid)
    deadline = t0 + timeout
    for _ in range(100_000):
        if get(port, marker):
            print(f"{(time.monotonic() - t0) * 1000:.1f}{suffix}")
            return
        if time.monotonic() > deadline:
            break
    raise SystemExit(f"no 200 with the marker from 127.0.0.1:{port} within {timeout} s")


if __name__ == "__main__":
    main()
