#!/usr/bin/env python3
"""Login flood: N concurrent wrong-password logins against a real controller.

Reports how many were judged (401), throttled (429) or refused as busy (503), the
controller's peak and idle RSS. A benchmark, not a test: run it by hand, e.g.

    tests/bench/login_flood.py target/debug/outpost-controller --n 300

Only loopback is used; the controller is started in a temp dir and stopped by PID.
"""
import argparse, http.client, json, os, socket, subprocess, sys, tempfile, threading, time


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def login(port, email, out, i):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        body = json.dumps({"email": email, "password": "wrong-password-%d" % i})
        c.request("POST", "/api/v1/session", body, {"content-type": "application/json"})
        out[i] = c.getresponse().status
        c.close()
    except Exception as e:  # a refused or reset connection is a result too
        out[i] = type(e).__name__


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--mode", choices=["one-email", "many-emails"], default="many-emails")
    ap.add_argument("--idle", type=float, default=35.0)
    a = ap.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.Popen([a.binary, "serve", "--data-dir", d, "--listen", f"127.0.0.1:{port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "RUST_LOG": "warn"})
        try:
            for _ in range(300):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            base = rss_kib(p.pid)
            out = [None] * a.n
            peak = [base]
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_kib(p.pid))
                    time.sleep(0.02)

            s = threading.Thread(target=sample)
            s.start()
            t0 = time.time()
            ts = []
            for i in range(a.n):
                email = "admin@outpost.local" if a.mode == "one-email" else f"user{i}@example.test"
                t = threading.Thread(target=login, args=(port, email, out, i))
                t.start()
                ts.append(t)
            for t in ts:
                t.join()
            took = time.time() - t0
            stop.set()
            s.join()
            time.sleep(a.idle)
            idle = rss_kib(p.pid)
            counts = {}
            for o in out:
                counts[str(o)] = counts.get(str(o), 0) + 1
            print(json.dumps({"n": a.n, "mode": a.mode, "statuses": counts, "seconds": round(took, 2),
                              "rss_start_mib": round(base / 1024, 1), "rss_peak_mib": round(peak[0] / 1024, 1),
                              "rss_after_idle_mib": round(idle / 1024, 1), "idle_s": a.idle}))
        finally:
            p.terminate()
            p.wait(10)


if __name__ == "__main__":
    sys.exit(main())
