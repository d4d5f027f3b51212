#!/usr/bin/env python3
"""Measures the ingress of a real `levee up` against hostile clients and under a real HTTP load
tool (wrk): the figures of BENCHMARKS.md's ingress section.

    ./scripts/ingress-bench.py                 # target/release/levee, the sample levee.toml
    LEVEE_BIN=target/debug/levee ./scripts/ingress-bench.py --skip-wrk

It starts `levee up` on a free loopback port with a fresh data directory, then:
  1. 1,050 connections holding partial headers from five loopback addresses: descriptors and
     connections held, what the others got, /healthz from another address, and when they close;
  2. a slow header, a chunked body without an end and an idle keep-alive connection: when each
     is closed;
  3. 40 uploads held one byte short of 10 MiB: memory, and what each got;
  4. `Content-Length: 99999999999`: the answer and how long it took;
  5. 20 dead letters of 10 MiB, then three dead-letter listings at once: response sizes, memory;
  6. with wrk (Debian's package): /healthz (no key) against keyed routes, requests/s and latency.
Prints a Markdown report on stdout.
"""

import argparse, json, os, resource, shutil, signal, socket, subprocess, sys, tempfile, threading, time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def proc_stat(pid):
    rss = fds = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def request(port, method, path, key=None, body=None, src="127.0.0.1", timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(src, 0))
    head = f"{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n"
    if key:
        head += f"authorization: Bearer {key}\r\n"
    data = b""
    if body is not None:
        data = body if isinstance(body, bytes) else body.encode()
        head += f"content-type: application/json\r\ncontent-length: {len(data)}\r\n"
    s.sendall(head.encode() + b"\r\n" + data)
    out = b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        out += chunk
    s.close()
    status = int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/") else 0
    return status, out


def wait_closed(sock, limit):
    sock.settimeout(limit)
    t0 = time.monotonic()
    try:
        while sock.recv(65536):
            pass
    except (socket.timeout, ConnectionError, OSError):
        pass
    return time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-wrk", action="store_true")
    ap.add_argument("--wrk-seconds", type=int, default=10)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    binary = os.environ.get("LEVEE_BIN", os.path.join(ROOT, "target/release/levee"))
    data = tempfile.mkdtemp(prefix="levee-ingress-bench-")
    port = free_port()
    log = open(os.path.join(data, "levee.log"), "w")
    up = subprocess.Popen([binary, "up", "--manifest", os.path.join(ROOT, "levee.toml"), "--data-dir", data,
                           "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=log)
    keyfile = os.path.join(data, "admin.key")
    for _ in range(600):
        if os.path.exists(keyfile):
            try:
                if request(port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
        time.sleep(0.1)
    admin = open(keyfile).read().strip()
    pid = up.pid
    out = []
    try:
        rss0, fd0 = proc_stat(pid)
        out.append(f"levee up: pid {pid}, RSS {rss0:.0f} MiB, {fd0} descriptors at rest\n")

        # 1. 1,050 partial-header connections from five addresses.
        held = []
        for i in range(1050):
            src = f"127.0.0.{2 + i % 5}"
            s = socket.create_connection(("127.0.0.1", port), source_address=(src, 0))
            s.sendall(b"GET /v1/status HTTP/1.1\r\nhost: loc")
            held.append(s)
        time.sleep(1.0)
        rss1, fd1 = proc_stat(pid)
        st = json.loads(request(port, "GET", "/v1/status", admin, src="127.0.0.9")[1].split(b"\r\n\r\n", 1)[1])
        ing = st["ingress"]
        t0 = time.monotonic()
        hz, _ = request(port, "GET", "/healthz", src="127.0.0.10")
        hz_ms = (time.monotonic() - t0) * 1000
        shed = 0
        for s in held:
            s.setblocking(False)
            try:
                if s.recv(64).startswith(b"HTTP/1.1 503"):
                    shed += 1
            except (BlockingIOError, OSError):
                pass
        t0 = time.monotonic()
        closed_at = []
        for s in held:
            s.setblocking(True)
            closed_at.append(wait_closed(s, max(0.1, 20 - (time.monotonic() - t0))) + (time.monotonic() - t0))
            s.close()
        out.append("| 1,050 connections holding partial headers (5 addresses) | figure |\n|---|---|")
        out.append(f"| descriptors of levee (at rest → held) | {fd0} → {fd1} |")
        out.append(f"| connections held by the ingress (bound {ing['max_connections']}) | {ing['connections']} |")
        out.append(f"| answered 503 and closed at once | {shed} (shed total {ing['shed_connections']}) |")
        out.append(f"| /healthz from another address meanwhile | {hz} in {hz_ms:.1f} ms |")
        out.append(f"| all closed by the server after | {max(closed_at):.1f} s (header timeout 5 s) |")
        out.append(f"| RSS while held | {rss1:.0f} MiB |\n")

        # 2. Slow header, endless chunked body, idle keep-alive.
        def timed(first, rest=None):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(first)
            return wait_closed(s, 60)

        chunked = (f"POST /v1/functions/inbound/messages HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {admin}\r\n"
                   "content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"a\":").encode()
        idle = f"GET /v1/status HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {admin}\r\n\r\n".encode()
        results = {}
        threads = [threading.Thread(target=lambda k=k, b=b: results.__setitem__(k, timed(b)))
                   for k, b in [("slow header", b"GET /healthz HTTP/1.1\r\nho"), ("chunked body without an end", chunked),
                                ("idle keep-alive after one request", idle)]]
        [t.start() for t in threads]
        [t.join() for t in threads]
        out.append("| client | closed by the server after |\n|---|---|")
        for k, v in results.items():
            out.append(f"| {k} | {v:.1f} s |")
        out.append("")

        # 3. 40 uploads held one byte short of 10 MiB.
        rss_a, _ = proc_stat(pid)
        body_len = 10 << 20
        ups, answers = [], {}
        chunk = b"x" * (1 << 20)
        for i in range(40):
            s = socket.create_connection(("127.0.0.1", port), source_address=(f"127.0.0.{20 + i % 4}", 0))
            s.sendall((f"POST /v1/functions/inbound/messages HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {admin}\r\n"
                       f"content-type: application/json\r\ncontent-length: {body_len}\r\n\r\n").encode())
            ups.append(s)
        for s in ups:
            s.setblocking(False)
            sent = 0
            try:
                while sent < body_len - 1:
                    sent += s.send(chunk[: min(len(chunk), body_len - 1 - sent)])
            except (BlockingIOError, OSError):
                pass
        time.sleep(1.5)
        rss_b, _ = proc_stat(pid)
        for s in ups:
            try:
                got = s.recv(64)
                code = got.split(b" ")[1].decode() if got.startswith(b"HTTP/") else "held"
            except (BlockingIOError, OSError):
                code = "held"
            answers[code] = answers.get(code, 0) + 1
            s.close()
        st = json.loads(request(port, "GET", "/v1/status", admin)[1].split(b"\r\n\r\n", 1)[1])["ingress"]
        out.append("| 40 uploads held one byte short of 10 MiB | figure |\n|---|---|")
        out.append(f"| RSS before → while held | {rss_a:.0f} → {rss_b:.0f} MiB (+{rss_b - rss_a:.0f} MiB; budget {st['max_inflight_body_bytes'] >> 20} MiB) |")
        out.append(f"| answers | {', '.join(f'{k}: {v}' for k, v in sorted(answers.items()))} |\n")

        # 4. A huge Content-Length.
        s = socket.create_connection(("127.0.0.1", port))
        t0 = time.monotonic()
        s.sendall((f"POST /v1/functions/inbound/messages HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {admin}\r\n"
                   "content-type: application/json\r\ncontent-length: 99999999999\r\n\r\n").encode())
        first = s.recv(200).split(b"\r\n")[0].decode()
        took = (time.monotonic() - t0) * 1000
        out.append(f"`Content-Length: 99999999999`: `{first}` after {took:.1f} ms\n")
        s.close()

        # 5. 20 dead letters of 10 MiB, three listings at once.
        big = json.dumps({"org": "acme", "channel": "fax", "text": "x" * ((10 << 20) - 200)})
        for i in range(20):
            request(port, "POST", "/v1/functions/inbound/messages", admin, big)
        for _ in range(300):
            st = json.loads(request(port, "GET", "/v1/status", admin)[1].split(b"\r\n\r\n", 1)[1])
            if next(f for f in st["functions"] if f["name"] == "inbound")["dlq"] >= 20:
                break
            time.sleep(0.2)
        rss_c, _ = proc_stat(pid)
        sizes, peak = [], [rss_c]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak.append(proc_stat(pid)[0])
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        lists = [threading.Thread(target=lambda: sizes.append(len(request(port, "GET", "/v1/functions/inbound/dlq?limit=100", admin)[1]))) for _ in range(3)]
        [t.start() for t in lists]
        [t.join() for t in lists]
        stop.set()
        sampler.join()
        out.append("| 20 dead letters of 10 MiB, three listings at once | figure |\n|---|---|")
        out.append(f"| response sizes | {', '.join(f'{n / 1024:.1f} KiB' for n in sizes)} |")
        out.append(f"| RSS before → peak | {rss_c:.0f} → {max(peak):.0f} MiB |\n")

        # 6. wrk.
        if not args.skip_wrk and shutil.which("wrk"):
            chat = json.loads(request(port, "POST", "/v1/keys", admin, json.dumps({"group": "chat", "name": "wrk"}))[1].split(b"\r\n\r\n", 1)[1])["key"]
            lua = os.path.join(data, "post.lua")
            msg = json.dumps({"org": "acme", "conversation": "c-1", "channel": "chat", "from": "ann@example.com", "text": "where is my order"})
            with open(lua, "w") as f:
                f.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(msg)}\nwrk.headers["content-type"] = "application/json"\n')
            out.append(f"| wrk -t2 -c32 -d{args.wrk_seconds}s | requests/s | p50 | p99 | answers |\n|---|---|---|---|---|")
            for label, path, key, script in [
                ("GET /healthz (no key: the baseline)", "/healthz", None, None),
                ("GET /v1/status (admin key)", "/v1/status", admin, None),
                ("POST inbound message (admin key, 202)", "/v1/functions/inbound/messages", admin, lua),
                ("POST inbound message (one chat source, rate 200/s)", "/v1/functions/inbound/messages", chat, lua),
            ]:
                cmd = ["wrk", "-t2", "-c32", f"-d{args.wrk_seconds}s", "--latency"]
                if key:
                    cmd += ["-H", f"authorization: Bearer {key}"]
                if script:
                    cmd += ["-s", script]
                r = subprocess.run(cmd + [f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True).stdout
                rps = next((l.split()[1] for l in r.splitlines() if l.startswith("Requests/sec")), "?")
                lat = {l.split()[0]: l.split()[1] for l in r.splitlines() if l.strip().startswith(("50%", "99%"))}
                non2xx = next((l.split(":")[1].strip() for l in r.splitlines() if "Non-2xx" in l), "0")
                out.append(f"| {label} | {rps} | {lat.get('50%', '?')} | {lat.get('99%', '?')} | non-2xx {non2xx} |")
                time.sleep(2)
            out.append("")
        print("\n".join(out))
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
