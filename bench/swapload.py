#!/usr/bin/env python3
"""Paced load for bench/swaps.sh: WORKERS threads, each with its own keep-alive HTTP/1.1
connection to the router, each sending one GET every PACE seconds at fixed slots (so the
offered rate is WORKERS / PACE). Runs until the file STOP exists (bounded by MAX_S), then
prints one TSV line per request: start time (s, Unix time), latency (ms), status (0 for a
failure). A send that starts more than half a pace after its slot counts as late; slots
that pass while a request runs are skipped and counted as missed (stderr summary)."""
import http.client, os, sys, threading, time

host, port, service, stop, max_s = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
WORKERS, PACE = int(os.environ.get("WORKERS", "10")), float(os.environ.get("PACE", "0.05"))
rows, lock = [], threading.Lock()
missed = [0]

def worker():
    conn = None
    slot = time.monotonic()
    end = slot + max_s
    while time.monotonic() < end and not os.path.exists(stop):
        t = time.monotonic()
        late = t > slot + PACE / 2
        status = 0
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("GET", "/", headers={"Host": f"{service}.slipway.localhost"})
            r = conn.getresponse()
            r.read()
            status = r.status
            if r.getheader("connection", "").lower() == "close":
                conn.close(); conn = None
        except Exception:
            if conn is not None:
                conn.close()
            conn = None
        lat = (time.monotonic() - t) * 1000
        with lock:
            # Wall-clock start, to line requests up with the activity log's at_ms.
            rows.append((time.time() - (time.monotonic() - t), lat, status))
            if late:
                missed[0] += 1
        slot += PACE
        now = time.monotonic()
        if now > slot + PACE:
            behind = int((now - slot) / PACE)
            with lock:
                missed[0] += behind
            slot += behind * PACE
        time.sleep(max(0.0, slot - time.monotonic()))

threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
for th in threads: th.start()
for th in threads: th.join()
for t, lat, st in sorted(rows):
    print(f"{t:.6f}\t{lat:.3f}\t{st}")
print(f"missed_or_late {missed[0]} of {len(rows) + missed[0]}", file=sys.stderr)
