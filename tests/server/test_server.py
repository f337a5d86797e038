#!/usr/bin/python3
"""ptk-server integration tests: the real binary, real clients.

    /usr/bin/python3 tests/server/test_server.py --server build/.../ptk-server [unittest args]

Every test class starts its own ptk-server on an ephemeral port (--port 0) with a
fresh SQLite database in a temporary directory, talks to it with http.client, raw
sockets, python3-websockets and headless Chromium, and stops it with SIGTERM,
checking that it exits 0 in time. Waiting for a state (a job to finish, a process
to exit) polls with a deadline; nothing sleeps to synchronise.

Run it with Debian's /usr/bin/python3: it has python3-websockets.
"""
import argparse
import asyncio
import html.parser
import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SERVER = None           # the ptk-server binary, from --server
CHROMIUM = "/usr/bin/chromium"
START_TIMEOUT = 20      # seconds for the server to print its address
STOP_TIMEOUT = 30       # seconds for the server to exit after SIGTERM
REQUEST_TIMEOUT = 60    # seconds for one HTTP exchange

# Variables ptk-server reads (CLI11 envname): cleared so the caller's environment
# cannot change what a test starts.
SERVER_ENV = ("HOST", "PORT", "WORKERS", "MAX_PROCESSES", "PROCESS_TIMEOUT",
              "PROCESS_POOL_SIZE", "MAX_THREADS", "THREAD_POOL_SIZE", "ENABLE_METRICS",
              "METRICS_PORT", "ALLOWED_COMMANDS", "API_TOKEN", "DATABASE", "SWAGGER_UI_DIR",
              "MAX_BODY_BYTES", "MAX_HEADER_BYTES", "MAX_CONNECTIONS", "MAX_JOBS",
              "REQUEST_TIMEOUT", "IDLE_TIMEOUT", "SHUTDOWN_GRACE", "QUIET")

# The endpoints of issue #8: every one must be in /openapi.json.
ISSUE_ENDPOINTS = [
    ("post", "/api/cpp/process/create"),
    ("get", "/api/cpp/process/list"),
    ("get", "/api/cpp/process/{pid}/status"),
    ("delete", "/api/cpp/process/{pid}"),
    ("get", "/api/cpp/process/{pid}/output"),
    ("post", "/api/cpp/process/pool/submit"),
    ("post", "/api/cpp/thread/create"),
    ("get", "/api/cpp/thread/state/{tid}"),
    ("get", "/api/cpp/thread/async-demo"),
    ("post", "/api/cpp/thread/pool/submit"),
    ("get", "/api/cpp/comparison/metrics"),
    ("post", "/api/cpp/comparison/benchmark/run"),
    ("get", "/api/cpp/comparison/results"),
    ("get", "/health"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
    ("get", "/ws/events"),
]


# ---- polling and /proc ----------------------------------------------------------------

def wait_until(predicate, timeout, what, interval=0.02):
    """Polls predicate() until it returns a true value (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        # A poll interval, not synchronisation: the predicate decides.
        threading.Event().wait(interval)


def poll(fetch, accept, timeout, what):
    """Calls fetch() until accept(value) holds, with a deadline; returns that value."""
    seen = []

    def accepted():
        seen[:] = [fetch()]
        return accept(seen[0])
    wait_until(accepted, timeout, what)
    return seen[0]


def proc_stat(pid):
    """(state, ppid, starttime) of a process from /proc/<pid>/stat, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces and parens
    return fields[0], int(fields[1]), int(fields[19])


def all_processes():
    """{pid: (state, ppid, starttime)} for every process visible now."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None:
                out[int(entry)] = st
    return out


def descendants(root):
    """{pid: starttime} of every live descendant of root (children, grandchildren...)."""
    procs = all_processes()
    children = {}
    for pid, (_, ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = procs[child][2]
            todo.append(child)
    return out


def alive(pid, starttime):
    """True if that very process (same start time) exists and is not a zombie."""
    st = proc_stat(pid)
    return st is not None and st[2] == starttime and st[0] not in ("Z", "X")


def children_of(pid):
    """Child pids of pid, from /proc/<pid>/task/*/children."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


class NoResponse(AssertionError):
    """The server closed a connection without answering the request."""


# ---- the server under test ---------------------------------------------------------

class Server:
    """One ptk-server process on an ephemeral port with its own database."""

    def __init__(self, *args, env=None, database=None, host="127.0.0.1"):
        self.tmp = tempfile.TemporaryDirectory(prefix="ptk-server-test-")
        self.database = database or os.path.join(self.tmp.name, "server.db")
        self.args = ["--host", host, "--port", "0", "--database", self.database, "--quiet",
                     *args]
        self.env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV}
        self.env.update(env or {})
        self.proc = None
        self.terminated = False
        self.port = None
        self.stdout_lines = []
        self.stderr_lines = []
        self._first_line = queue.Queue()

    def start(self):
        self.proc = subprocess.Popen([SERVER, *self.args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     env=self.env, cwd=self.tmp.name, text=True)
        # Drain both pipes so the server never blocks on a full pipe.
        self._drains = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.stdout_lines, True),
                             daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.stderr_lines, False),
                             daemon=True)]
        for t in self._drains:
            t.start()
        try:
            line = self._first_line.get(timeout=START_TIMEOUT)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"ptk-server printed nothing in {START_TIMEOUT} s")
        match = re.search(r"listening on http://[^:]+:(\d+)", line or "")
        if not match:
            self.kill()
            raise AssertionError(f"ptk-server did not start: {line!r}; stderr: {self.stderr()}")
        self.port = int(match.group(1))
        self.banner = line
        # A request served means the I/O threads run, so the SIGTERM handler is in place.
        status, _, _ = self.request("GET", "/health")
        if status != 200:
            raise AssertionError(f"GET /health after start: {status}")
        return self

    def _drain(self, pipe, lines, first):
        for line in pipe:
            if first and not lines:
                self._first_line.put(line)
            lines.append(line)
        if first and not lines:
            self._first_line.put(None)

    def stderr(self):
        return "".join(self.stderr_lines)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM; returns (exit status, seconds it took) and never leaves it running."""
        if self.proc is None:
            return None, 0.0
        t0 = time.monotonic()
        self.terminate()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = "still running"
        elapsed = time.monotonic() - t0
        self._close_pipes()
        return code, elapsed

    def terminate(self):
        """Sends SIGTERM once: a second one is not what these tests are about."""
        if not self.terminated and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.terminated = True

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_pipes()

    def _close_pipes(self):
        if self.proc is None:
            return
        for t in self._drains:
            t.join(timeout=5)  # EOF once the server and its children are gone
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed and not any(t.is_alive() for t in self._drains):
                pipe.close()
        self.proc = None

    def cleanup(self):
        self.kill()
        self.tmp.cleanup()

    # -- clients ------------------------------------------------------------------------

    def connection(self, timeout=REQUEST_TIMEOUT):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, raw=None, timeout=REQUEST_TIMEOUT):
        """One request on a fresh connection: (status, headers, body bytes)."""
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        except (http.client.RemoteDisconnected, ConnectionResetError) as e:
            raise NoResponse(f"{method} {path}: the server closed the connection "
                                 f"without a response ({e})") from None
        finally:
            conn.close()

    def json(self, method, path, body=None, headers=None, raw=None):
        """One request whose answer must be JSON: (status, decoded body, headers)."""
        status, hdrs, data = self.request(method, path, body=body, headers=headers, raw=raw)
        try:
            decoded = json.loads(data)
        except ValueError:
            raise AssertionError(f"{method} {path}: {status} with a body that is not JSON: "
                                 f"{data[:300]!r}")
        return status, decoded, hdrs

    def raw_socket(self, timeout=10):
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)


def read_until_closed(sock, timeout):
    """Reads until the peer closes: (bytes, seconds it took); raises if it stays open."""
    t0 = time.monotonic()
    data = b""
    sock.settimeout(timeout)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except socket.timeout:
            raise AssertionError(f"the server kept the connection open for {timeout} s; "
                                 f"received {data[:200]!r}")
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - t0


def read_response(sock):
    """Reads one Content-Length-delimited response: (status, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before a whole response head: {data!r}")
        data += chunk
    head = data[:data.index(b"\r\n\r\n")]
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
    while len(data) < len(head) + 4 + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("closed before a whole response body")
        data += chunk
    status, headers, body, _ = split_response(data)
    return status, headers, body


def split_response(data):
    """Splits one raw, Content-Length-delimited response: (status, headers, body, rest)."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(rest)))
    return status, headers, rest[:length], rest[length:]


# ---- the base of every class: one server per class, alive after every test ------------

class ServerTestCase(unittest.TestCase):
    """Starts a server for the class; checks /health after each test and a clean exit."""
    server_args = ()
    server_env = {}

    @classmethod
    def setUpClass(cls):
        cls.server = Server(*cls.server_args, env=cls.server_env)
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            code, elapsed = cls.server.stop()
            if code != 0:
                raise AssertionError(f"ptk-server exited with {code} after SIGTERM "
                                     f"({elapsed:.1f} s); stderr: {cls.server.stderr()[-2000:]}")
        finally:
            cls.server.cleanup()

    def tearDown(self):
        # The server survived whatever the test sent.
        self.assertIsNotNone(self.server.proc, "the server was stopped")
        self.assertIsNone(self.server.proc.poll(),
                          f"ptk-server died; stderr: {self.server.stderr()[-2000:]}")
        status, body, _ = self.server.json("GET", "/health")
        self.assertEqual(status, 200)
        self.assertEqual(body["status"], "ok")

    # -- helpers ------------------------------------------------------------------------

    def assertError(self, status, body, want, message=None):
        """A JSON error body {"error": {"status", "message", ...}} with that status."""
        self.assertEqual(status, want, body)
        self.assertIsInstance(body, dict)
        self.assertIn("error", body)
        self.assertEqual(body["error"]["status"], want)
        self.assertIsInstance(body["error"]["message"], str)
        if message is not None:
            self.assertIn(message, body["error"]["message"])

    def create_process(self, argv, **fields):
        status, body, _ = self.server.json("POST", "/api/cpp/process/create",
                                           {"argv": argv, **fields})
        self.assertEqual(status, 201, body)
        return body

    def process_status(self, pid):
        status, body, _ = self.server.json("GET", f"/api/cpp/process/{pid}/status")
        self.assertEqual(status, 200, body)
        return body

    def wait_process_ended(self, pid, timeout=30):
        return poll(lambda: self.process_status(pid), lambda s: s["state"] != "running",
                    timeout, f"process {pid} to end")

    def wait_job(self, job_id, timeout=120):
        def finished():
            status, body, _ = self.server.json("GET", f"/api/cpp/jobs/{job_id}")
            self.assertEqual(status, 200, body)
            return body if body["state"] not in ("queued", "running") else None
        return wait_until(finished, timeout, f"job {job_id} to finish")

    def metric(self, text, name):
        """The value of an unlabelled Prometheus sample."""
        match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
        self.assertIsNotNone(match, f"{name} not in /metrics")
        return float(match.group(1))


# ---- every endpoint, happy path ---------------------------------------------------------

class EndpointTest(ServerTestCase):
    server_env = {"ALLOWED_COMMANDS": "echo,sleep,sh,true,false"}

    # -- processes ----------------------------------------------------------------------

    def test_process_create_returns_201_with_a_pid_and_runs_the_command(self):
        tmp = self.server.tmp.name
        status, body, headers = self.server.json(
            "POST", "/api/cpp/process/create",
            {"argv": ["sh", "-c", 'echo "$GREETING from $(pwd)"'], "cwd": tmp,
             "env": {"GREETING": "hi"}, "timeout": 30})
        self.assertEqual(status, 201, body)
        pid = body["pid"]
        self.assertIsInstance(pid, int)
        self.assertGreater(pid, 0)
        self.assertEqual(body["argv"], ["sh", "-c", 'echo "$GREETING from $(pwd)"'])
        self.assertEqual(headers["Location"], f"/api/cpp/process/{pid}/status")
        ended = self.wait_process_ended(pid)
        self.assertEqual(ended["state"], "exited")
        self.assertTrue(ended["exit"]["exited"])
        self.assertEqual(ended["exit"]["code"], 0)
        status, _, out = self.server.request("GET", f"/api/cpp/process/{pid}/output")
        self.assertEqual(status, 200)
        self.assertEqual(out.decode(), f"hi from {os.path.realpath(tmp)}\n")

    def test_process_list_shows_created_processes(self):
        pid = self.create_process(["sleep", "30"])["pid"]
        try:
            status, body, _ = self.server.json("GET", "/api/cpp/process/list")
            self.assertEqual(status, 200, body)
            listed = {p["pid"]: p for p in body["processes"]}
            self.assertIn(pid, listed)
            self.assertEqual(listed[pid]["state"], "running")
            self.assertEqual(listed[pid]["argv"], ["sleep", "30"])
            self.assertGreaterEqual(body["running"], 1)
            self.assertEqual(body["count"], len(body["processes"]))
        finally:
            self.server.json("DELETE", f"/api/cpp/process/{pid}")

    def test_process_status_shows_the_kernel_view_then_the_exit_status(self):
        pid = self.create_process(["sleep", "30"])["pid"]
        try:
            # Right after the 201 the child may still be inside execve (the kernel shows
            # the new name before the new command line): poll until it is sleep.
            body = poll(lambda: self.process_status(pid),
                        lambda b: b["process_info"]["cmdline"], 10, "the exec to complete")
            self.assertEqual(body["pid"], pid)
            self.assertEqual(body["state"], "running")
            self.assertIsNone(body["exit"])
            self.assertEqual(body["process_info"]["ppid"], self.server.proc.pid)
            self.assertEqual(body["process_info"]["name"], "sleep")
            self.assertEqual(body["process_info"]["cmdline"], ["sleep", "30"])
        finally:
            self.server.json("DELETE", f"/api/cpp/process/{pid}")
        pid = self.create_process(["false"])["pid"]
        body = self.wait_process_ended(pid)
        self.assertEqual(body["state"], "exited")
        self.assertEqual(body["exit"]["code"], 1)
        self.assertEqual(body["ended_by"], "exit")

    def test_process_delete_terminates_and_returns_the_exit_status(self):
        pid = self.create_process(["sleep", "30"])["pid"]
        started = proc_stat(pid)[2]
        t0 = time.monotonic()
        status, body, _ = self.server.json("DELETE", f"/api/cpp/process/{pid}")
        self.assertEqual(status, 200, body)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertTrue(body["was_running"])
        self.assertEqual(body["state"], "killed")
        self.assertEqual(body["ended_by"], "request")
        self.assertEqual(body["exit"]["signal"], signal.SIGTERM)
        self.assertEqual(body["exit"]["signal_name"], "TERM")
        self.assertFalse(alive(pid, started), "the child is still there")
        # Deleting an ended process answers its status again.
        status, body, _ = self.server.json("DELETE", f"/api/cpp/process/{pid}")
        self.assertEqual(status, 200, body)
        self.assertFalse(body["was_running"])

    def test_process_delete_kills_a_child_that_ignores_sigterm_after_the_grace(self):
        pid = self.create_process(["sh", "-c", "trap '' TERM; echo ready; sleep 30"])["pid"]
        # The trap must be in place before the signal: wait for the child's word.
        wait_until(lambda: self.process_status(pid)["output_bytes"] > 0, 10, "the trap")
        status, body, _ = self.server.json("DELETE", f"/api/cpp/process/{pid}?grace_ms=200")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["exit"]["signal_name"], "KILL", body)

    def test_process_output_streams_chunks_while_the_process_runs(self):
        pid = self.create_process(["sh", "-c", "echo one; sleep 0.3; echo two"])["pid"]
        sock = self.server.raw_socket(timeout=30)
        with sock:
            sock.sendall(f"GET /api/cpp/process/{pid}/output HTTP/1.1\r\n"
                         f"Host: 127.0.0.1\r\n\r\n".encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(4096)
                self.assertTrue(chunk, "closed before the response head")
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
            self.assertIn(b"transfer-encoding: chunked", head.lower())
            # Decode chunks as they come; note when "one" arrives.
            text, one_at, two_at = "", None, None
            while True:
                while b"\r\n" not in buf:
                    chunk = sock.recv(4096)
                    self.assertTrue(chunk, "closed mid-stream")
                    buf += chunk
                size_line, _, buf = buf.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(buf) < size + 2:
                    chunk = sock.recv(4096)
                    self.assertTrue(chunk, "closed mid-chunk")
                    buf += chunk
                data, buf = buf[:size], buf[size + 2:]
                if size == 0:
                    break
                text += data.decode()
                if one_at is None and "one" in text:
                    one_at = time.time()
                    self.assertNotIn("two", text, "both lines came in one piece")
                if two_at is None and "two" in text:
                    two_at = time.time()
        self.assertEqual(text, "one\ntwo\n")
        ended = self.wait_process_ended(pid)
        self.assertIsNotNone(one_at)
        self.assertLess(one_at, ended["ended"], "'one' arrived only after the process exited")
        self.assertGreater(two_at, one_at)

    def test_process_output_without_follow_returns_what_is_there(self):
        pid = self.create_process(["echo", "hello"])["pid"]
        self.wait_process_ended(pid)
        status, headers, out = self.server.request(
            "GET", f"/api/cpp/process/{pid}/output?follow=false")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Transfer-Encoding"], "chunked")
        self.assertEqual(out, b"hello\n")

    def test_process_timeout_terminates_a_long_child(self):
        pid = self.create_process(["sleep", "30"], timeout=0.3)["pid"]
        body = self.wait_process_ended(pid, timeout=15)
        self.assertEqual(body["ended_by"], "timeout")
        self.assertEqual(body["state"], "killed")

    def test_process_pool_submit_sync_fib(self):
        status, body, _ = self.server.json("POST", "/api/cpp/process/pool/submit",
                                           {"function": "fib", "n": 20, "mode": "sync"})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["status"], "done")
        self.assertEqual(body["value"], 6765)
        status, body, _ = self.server.json("POST", "/api/cpp/process/pool/submit",
                                           {"function": "prime_count", "n": 1000})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["value"], 168)

    def test_process_pool_submit_crash_fails_with_worker_crash_and_the_pool_recovers(self):
        status, body, _ = self.server.json("POST", "/api/cpp/process/pool/submit",
                                           {"function": "crash"})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["status"], "failed")
        self.assertEqual(body["error"]["type"], "worker_crash")
        status, body, _ = self.server.json("POST", "/api/cpp/process/pool/submit",
                                           {"function": "fib", "n": 10})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["value"], 55)

    def test_process_pool_submit_background_returns_202_and_a_job(self):
        status, body, headers = self.server.json(
            "POST", "/api/cpp/process/pool/submit",
            {"function": "sleep", "ms": 50, "mode": "background"})
        self.assertEqual(status, 202, body)
        job_id = body["id"]
        self.assertEqual(headers["Location"], f"/api/cpp/jobs/{job_id}")
        self.assertEqual(body["kind"], "process_pool")
        job = self.wait_job(job_id)
        self.assertEqual(job["state"], "done", job)
        self.assertEqual(job["result"]["status"], "done")
        self.assertGreaterEqual(job["result"]["value"], 50)  # the milliseconds it slept

    # -- threads ------------------------------------------------------------------------

    def test_thread_create_and_state_with_the_kernel_view(self):
        status, body, headers = self.server.json(
            "POST", "/api/cpp/thread/create", {"name": "sleeper", "task": "sleep", "ms": 5000})
        self.assertEqual(status, 201, body)
        tid = body["tid"]
        self.assertEqual(headers["Location"], f"/api/cpp/thread/state/{tid}")
        self.assertEqual(body["name"], "sleeper")
        # The thread exists (created or running) from the 201 on: poll until it runs
        # and the kernel shows it asleep in its 5 s sleep. "running" is set by the
        # thread itself just before it sleeps, so the first look may still see "R".
        state = poll(lambda: self.server.json("GET", f"/api/cpp/thread/state/{tid}")[1],
                     lambda b: b["state"] == "running" and b["kernel"] is not None
                     and b["kernel"]["state"] == "S", 10, "the thread to sleep")
        self.assertEqual(state["tid"], tid)
        self.assertEqual(state["kernel"]["state"], "S")
        self.assertEqual(state["kernel"]["name"], "sleeper")
        # The thread belongs to the server.
        self.assertTrue(os.path.exists(f"/proc/{self.server.proc.pid}/task/{tid}"))

    def test_thread_runs_to_completion_with_a_result(self):
        status, body, _ = self.server.json("POST", "/api/cpp/thread/create",
                                           {"task": "fib", "n": 20})
        self.assertEqual(status, 201, body)
        tid = body["tid"]
        state = poll(lambda: self.server.json("GET", f"/api/cpp/thread/state/{tid}")[1],
                     lambda b: b["state"] == "finished", 30, "the thread to finish")
        self.assertEqual(state["result"]["fib"], 6765)
        self.assertIsNone(state["kernel"])

    def test_thread_async_demo_overlaps_the_coroutines(self):
        status, body, _ = self.server.json("GET",
                                           "/api/cpp/thread/async-demo?coroutines=10&ms=100")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["coroutines"], 10)
        self.assertLess(body["total_ms"], body["sum_ms"])
        self.assertGreater(body["overlap"], 1)
        self.assertGreaterEqual(body["total_ms"], 100)

    def test_thread_pool_submit_sync(self):
        status, body, _ = self.server.json("POST", "/api/cpp/thread/pool/submit",
                                           {"task": "fib", "n": 20, "mode": "sync",
                                            "priority": "high"})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["task"], "fib")
        self.assertEqual(body["value"], 6765)
        self.assertTrue(os.path.exists(f"/proc/{self.server.proc.pid}/task/{body['thread']}"))

    def test_thread_pool_submit_background_returns_202_and_a_job(self):
        status, body, headers = self.server.json(
            "POST", "/api/cpp/thread/pool/submit", {"task": "primes", "n": 1000,
                                                    "mode": "background"})
        self.assertEqual(status, 202, body)
        job_id = body["id"]
        self.assertEqual(headers["Location"], f"/api/cpp/jobs/{job_id}")
        job = self.wait_job(job_id)
        self.assertEqual(job["state"], "done", job)
        self.assertEqual(job["result"]["value"], 168)
        status, body, _ = self.server.json("GET", "/api/cpp/jobs")
        self.assertEqual(status, 200, body)
        self.assertIn(job_id, [j["id"] for j in body["jobs"]])

    # -- comparison ---------------------------------------------------------------------

    def test_comparison_metrics(self):
        status, body, _ = self.server.json("GET", "/api/cpp/comparison/metrics")
        self.assertEqual(status, 200, body)
        for key in ("processes", "threads", "thread_pool", "process_pool", "channels", "jobs"):
            self.assertIn(key, body)
        self.assertEqual(body["thread_pool"]["workers"], 4)
        self.assertEqual(body["process_pool"]["workers_alive"], 2)
        self.assertGreaterEqual(body["uptime_seconds"], 0)

    def test_comparison_benchmark_runs_in_the_background_and_results_are_newest_first(self):
        ids = []
        for scenario, n in (("io", 20), ("cpu", 15)):
            status, body, headers = self.server.json(
                "POST", "/api/cpp/comparison/benchmark/run",
                {"scenario": scenario, "tasks": 4, "n": n, "workers": 2})
            self.assertEqual(status, 202, body)
            self.assertEqual(body["kind"], "benchmark")
            self.assertEqual(headers["Location"], f"/api/cpp/jobs/{body['id']}")
            job = self.wait_job(body["id"])
            self.assertEqual(job["state"], "done", job)
            self.assertEqual({r["approach"] for r in job["result"]["results"]},
                             {"threads", "processes", "coroutines"})
            ids.append(body["id"])
        status, body, _ = self.server.json("GET", "/api/cpp/comparison/results")
        self.assertEqual(status, 200, body)
        listed = [r["job_id"] for r in body["results"] if r.get("job_id") in ids]
        self.assertEqual(listed, list(reversed(ids)))
        self.assertEqual(body["results"][0]["job_id"], ids[-1])

    # -- service ------------------------------------------------------------------------

    def test_health(self):
        status, headers, data = self.server.request("GET", "/health")
        self.assertEqual(status, 200)
        self.assertIn("application/json", headers["Content-Type"])
        self.assertEqual(json.loads(data), {"status": "ok", "ready": True})

    def test_metrics_are_prometheus_text_and_counters_increase(self):
        status, headers, data = self.server.request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertIn("text/plain", headers["Content-Type"])
        before = data.decode()
        for name in ("process_created_total", "thread_created_total", "active_processes_gauge",
                     "active_threads_gauge", "thread_pool_workers", "thread_pool_queued_tasks",
                     "process_pool_workers", "process_pool_done_tasks"):
            self.assertRegex(before, rf"(?m)^# TYPE {name} (counter|gauge)$")
            self.metric(before, name)
        self.assertRegex(before, r"(?m)^# TYPE request_duration_seconds histogram$")
        self.assertRegex(before, r'(?m)^request_duration_seconds_bucket\{.*le="0\.1".*\} \d+')
        self.assertRegex(before, r'(?m)^request_duration_seconds_bucket\{.*le="\+Inf".*\} \d+')
        self.assertRegex(before, r'(?m)^request_duration_seconds_count\{.*route="/health".*\} '
                                 r'[1-9]')
        self.assertEqual(self.metric(before, "thread_pool_workers"), 4)
        self.assertEqual(self.metric(before, "process_pool_workers"), 2)

        pid = self.create_process(["sleep", "30"])["pid"]
        try:
            status, body, _ = self.server.json("POST", "/api/cpp/thread/create",
                                               {"task": "sleep", "ms": 2000})
            self.assertEqual(status, 201, body)
            after = self.server.request("GET", "/metrics")[2].decode()
            self.assertEqual(self.metric(after, "process_created_total"),
                             self.metric(before, "process_created_total") + 1)
            self.assertEqual(self.metric(after, "thread_created_total"),
                             self.metric(before, "thread_created_total") + 1)
            self.assertGreaterEqual(self.metric(after, "active_processes_gauge"), 1)
            self.assertGreaterEqual(self.metric(after, "active_threads_gauge"), 1)
        finally:
            self.server.json("DELETE", f"/api/cpp/process/{pid}")

    def test_openapi_lists_every_endpoint_of_the_issue(self):
        status, body, _ = self.server.json("GET", "/openapi.json")
        self.assertEqual(status, 200)
        self.assertTrue(body["openapi"].startswith("3."))
        self.assertEqual(body["info"]["title"], "ptk-server")
        for method, path in ISSUE_ENDPOINTS:
            with self.subTest(path=path, method=method):
                self.assertIn(path, body["paths"])
                self.assertIn(method, body["paths"][path])
                self.assertIn("responses", body["paths"][path][method])

    def test_docs_serves_the_swagger_ui_page_and_its_files(self):
        status, headers, data = self.server.request("GET", "/docs")
        self.assertEqual(status, 200, data[:300])
        self.assertIn("text/html", headers["Content-Type"])
        page = data.decode()
        self.assertIn('id="swagger-ui"', page)
        self.assertIn("/openapi.json", page)
        for src in re.findall(r'(?:src|href)="(/docs/[^"]+)"', page):
            with self.subTest(file=src):
                status, _, data = self.server.request("GET", src)
                self.assertEqual(status, 200)
                self.assertGreater(len(data), 0)

    # -- WebSocket ------------------------------------------------------------------------

    def test_websocket_events_hello_ping_and_process_events(self):
        import websockets  # python3-websockets, Debian's /usr/bin/python3

        async def session():
            uri = f"ws://127.0.0.1:{self.server.port}/ws/events"
            async with websockets.connect(uri, open_timeout=10, close_timeout=5) as ws:
                hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
                self.assertEqual(hello["type"], "hello")
                self.assertIn("process.exited", hello["events"])
                await ws.send(json.dumps({"type": "ping"}))
                pong = json.loads(await asyncio.wait_for(ws.recv(), 10))
                self.assertEqual(pong["type"], "pong")
                await ws.send("not json")
                err = json.loads(await asyncio.wait_for(ws.recv(), 10))
                self.assertEqual(err["type"], "error")
                # Subscribed since before hello: this process's events must come.
                loop = asyncio.get_running_loop()
                created = await loop.run_in_executor(
                    None, lambda: self.server.json("POST", "/api/cpp/process/create",
                                                   {"argv": ["echo", "ws"]}))
                self.assertEqual(created[0], 201, created[1])
                pid = created[1]["pid"]
                seen = []
                while "process.exited" not in seen:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 15))
                    if event.get("pid") == pid:
                        seen.append(event["type"])
                        if event["type"] == "process.exited":
                            self.assertEqual(event["exit"]["code"], 0)
                self.assertEqual(seen, ["process.started", "process.exited"])

        asyncio.run(asyncio.wait_for(session(), 60))

    def test_websocket_events_for_threads_and_jobs(self):
        import websockets

        async def session():
            uri = f"ws://127.0.0.1:{self.server.port}/ws/events"
            async with websockets.connect(uri, open_timeout=10, close_timeout=5) as ws:
                hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
                self.assertEqual(hello["type"], "hello")
                loop = asyncio.get_running_loop()
                thread = await loop.run_in_executor(None, lambda: self.server.json(
                    "POST", "/api/cpp/thread/create", {"name": "ws-thread", "task": "fib",
                                                       "n": 10}))
                self.assertEqual(thread[0], 201, thread[1])
                job = await loop.run_in_executor(None, lambda: self.server.json(
                    "POST", "/api/cpp/thread/pool/submit", {"task": "fib", "n": 10,
                                                            "mode": "background"}))
                self.assertEqual(job[0], 202, job[1])
                want = {("thread.started", thread[1]["tid"]), ("thread.finished", thread[1]["tid"]),
                        ("job.done", job[1]["id"])}
                seen = set()
                while not want <= seen:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 15))
                    seen.add((event["type"], event.get("tid", event.get("id"))))
                    if event["type"] == "job.done" and event["id"] == job[1]["id"]:
                        self.assertEqual(event["state"], "done")

        asyncio.run(asyncio.wait_for(session(), 60))

    # -- connections ----------------------------------------------------------------------

    def test_keep_alive_serves_several_requests_on_one_connection(self):
        conn = self.server.connection()
        try:
            for path in ("/health", "/api/cpp/process/list", "/health"):
                conn.request("GET", path)
                resp = conn.getresponse()
                self.assertEqual(resp.status, 200)
                self.assertEqual(resp.headers["Connection"], "keep-alive")
                resp.read()
            # One socket throughout: http.client would reconnect silently, so check it.
            self.assertIsNotNone(conn.sock)
        finally:
            conn.close()

    def test_an_http_1_0_request_is_answered_and_closed(self):
        with self.server.raw_socket() as sock:
            sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            data, elapsed = read_until_closed(sock, 10)
        status, headers, body, rest = split_response(data)
        self.assertEqual(status, 200)
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(json.loads(body)["status"], "ok")
        self.assertEqual(rest, b"")

    def test_pipelined_requests_get_responses_in_order(self):
        with self.server.raw_socket() as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /api/cpp/thread/async-demo?coroutines=2&ms=1 HTTP/1.1\r\n"
                         b"Host: x\r\n\r\n"
                         b"GET /no/such/path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data, _ = read_until_closed(sock, 30)
        status, _, body, rest = split_response(data)
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["status"], "ok")
        status, _, body, rest = split_response(rest)
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["coroutines"], 2)
        status, headers, body, rest = split_response(rest)
        self.assertEqual(status, 404)
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(rest, b"")


    def test_expect_100_continue_is_answered_before_the_body(self):
        body = b'{"task": "fib", "n": 10}'
        with self.server.raw_socket() as sock:
            sock.sendall(b"POST /api/cpp/thread/pool/submit HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                         b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
            interim = b""
            while b"\r\n\r\n" not in interim:
                chunk = sock.recv(4096)
                self.assertTrue(chunk, "closed before 100 Continue")
                interim += chunk
            self.assertTrue(interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim)
            sock.sendall(body)
            data, _ = read_until_closed(sock, 30)
        after_interim = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):] + data
        status, _, payload, _ = split_response(after_interim)
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(payload)["value"], 55)


# ---- bad input: 4xx with a JSON error body, never a crash -------------------------------

class BadInputTest(ServerTestCase):
    server_args = ("--max-body-bytes", "1024", "--max-header-bytes", "2048")
    server_env = {"ALLOWED_COMMANDS": "echo,sleep,no-such-program-xyz"}

    def test_malformed_json_is_400(self):
        for raw in (b'{"argv": ["echo"', b"{argv: 1}", b"[", b'{"argv": ["echo"]} x'):
            with self.subTest(body=raw):
                status, body, _ = self.server.json(
                    "POST", "/api/cpp/process/create", raw=raw,
                    headers={"Content-Type": "application/json"})
                self.assertError(status, body, 400, "malformed JSON")

    def test_errors_that_echo_invalid_utf8_input_are_still_json(self):
        # The error body quotes what the client sent; bytes that are not UTF-8 must not
        # cost the client its answer.
        json_type = {"Content-Type": "application/json"}
        cases = [
            ("GET", "/api/cpp/process/%ff/status", None, {}, 400),
            ("GET", "/api/cpp/jobs/%ff", None, {}, 404),
            ("GET", "/no/such/%ff", None, {}, 404),
            ("POST", "/api/cpp/process/create", b'{"argv": ["\xff"]}', json_type, 400),
            ("POST", "/api/cpp/thread/create", b'{"\xc3\x28": 1}', json_type, 400),
            ("POST", "/api/cpp/thread/create", b"{}", {"Content-Type": b"text/\xff"}, 415),
        ]
        for method, path, raw, headers, want in cases:
            with self.subTest(method=method, path=path, body=raw, headers=headers):
                status, body, _ = self.server.json(method, path, raw=raw, headers=headers)
                self.assertError(status, body, want)

    def test_a_body_that_is_not_an_object_is_400(self):
        status, body, _ = self.server.json("POST", "/api/cpp/thread/create", body=[1, 2])
        self.assertError(status, body, 400)

    def test_wrong_types_are_400_naming_the_field(self):
        cases = [
            ("/api/cpp/process/create", {"argv": "echo hi"}, "argv"),
            ("/api/cpp/process/create", {"argv": ["echo", 1]}, "argv"),
            ("/api/cpp/process/create", {"argv": []}, "argv"),
            ("/api/cpp/process/create", {"argv": ["echo"], "timeout": "soon"}, "timeout"),
            ("/api/cpp/process/create", {"argv": ["echo"], "env": ["A=1"]}, "env"),
            ("/api/cpp/process/create", {"argv": ["echo"], "cwd": 7}, "cwd"),
            ("/api/cpp/thread/create", {"ms": "100"}, "ms"),
            ("/api/cpp/thread/create", {"task": "dance"}, "task"),
            ("/api/cpp/thread/pool/submit", {"n": 1.5}, "n"),
            ("/api/cpp/thread/pool/submit", {"n": 41}, "n"),
            ("/api/cpp/process/pool/submit", {"function": 3}, "function"),
            ("/api/cpp/comparison/benchmark/run", {"tasks": True}, "tasks"),
        ]
        for path, payload, field in cases:
            with self.subTest(path=path, body=payload):
                status, body, _ = self.server.json("POST", path, payload)
                self.assertError(status, body, 400, field)
                self.assertEqual(body["error"]["detail"]["field"], field)

    def test_unknown_fields_are_400_listing_them(self):
        status, body, _ = self.server.json("POST", "/api/cpp/process/create",
                                           {"argv": ["echo"], "shell": True})
        self.assertError(status, body, 400, "unknown fields")
        self.assertEqual(body["error"]["detail"]["unknown"], ["shell"])
        self.assertIn("argv", body["error"]["detail"]["allowed"])
        status, body, _ = self.server.json("POST", "/api/cpp/thread/pool/submit",
                                           {"task": "fib", "nn": 3})
        self.assertError(status, body, 400, "unknown fields")

    def test_a_body_that_is_not_json_by_content_type_is_415(self):
        status, body, _ = self.server.json("POST", "/api/cpp/process/create",
                                           raw=b"argv=echo",
                                           headers={"Content-Type": "text/plain"})
        self.assertError(status, body, 415)

    def test_oversized_body_is_413(self):
        payload = {"argv": ["echo", "x" * 4096]}
        status, body, _ = self.server.json("POST", "/api/cpp/process/create", payload)
        self.assertError(status, body, 413)
        self.assertEqual(body["error"]["detail"]["limit_bytes"], 1024)

    def test_oversized_chunked_body_is_413(self):
        with self.server.raw_socket() as sock:
            chunk = b"x" * 800
            sock.sendall(b"POST /api/cpp/process/create HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2 + b"0\r\n\r\n")
            data, _ = read_until_closed(sock, 10)
        status, _, body, _ = split_response(data)
        self.assertError(status, json.loads(body), 413)

    def test_oversized_headers_are_431(self):
        status, body, _ = self.server.json("GET", "/health", headers={"X-Big": "a" * 4096})
        self.assertError(status, body, 431)
        many = {f"X-H{i}": "v" * 40 for i in range(100)}
        status, body, _ = self.server.json("GET", "/health", headers=many)
        self.assertError(status, body, 431)
        status, body, _ = self.server.json("GET", "/health?" + "q" * 4096)
        self.assertError(status, body, 431)

    def test_unknown_pid_tid_and_job_are_404(self):
        for method, path in (("GET", "/api/cpp/process/999999999/status"),
                             ("GET", "/api/cpp/process/999999999/output"),
                             ("DELETE", "/api/cpp/process/999999999"),
                             ("GET", "/api/cpp/thread/state/999999999"),
                             ("GET", "/api/cpp/jobs/0123456789abcdef")):
            with self.subTest(method=method, path=path):
                status, body, _ = self.server.json(method, path)
                self.assertError(status, body, 404, "no such")

    def test_non_numeric_ids_are_400(self):
        for method, path in (("GET", "/api/cpp/process/abc/status"),
                             ("GET", "/api/cpp/process/-1/status"),
                             ("GET", "/api/cpp/process/12abc/output"),
                             ("DELETE", "/api/cpp/process/1.5"),
                             ("GET", "/api/cpp/process/99999999999999999999/status"),
                             ("GET", "/api/cpp/thread/state/xyz")):
            with self.subTest(method=method, path=path):
                status, body, _ = self.server.json(method, path)
                self.assertError(status, body, 400, "positive integer")

    def test_bad_query_parameters_are_400(self):
        for path in ("/api/cpp/thread/async-demo?coroutines=abc",
                     "/api/cpp/thread/async-demo?ms=-5",
                     "/api/cpp/comparison/results?limit=0"):
            with self.subTest(path=path):
                status, body, _ = self.server.json("GET", path)
                self.assertError(status, body, 400, "invalid query parameter")

    def test_command_not_in_the_allow_list_is_403(self):
        status, body, _ = self.server.json("POST", "/api/cpp/process/create",
                                           {"argv": ["rm", "-rf", "/tmp/nothing"]})
        self.assertError(status, body, 403, "not allowed")
        self.assertEqual(body["error"]["detail"]["setting"], "ALLOWED_COMMANDS")
        self.assertEqual(body["error"]["detail"]["command"], "rm")
        # A path to an allowed program is another program.
        status, body, _ = self.server.json("POST", "/api/cpp/process/create",
                                           {"argv": ["/bin/sh", "-c", "echo"]})
        self.assertError(status, body, 403)

    def test_missing_executable_in_the_allow_list_is_400_spawn_failed(self):
        status, body, _ = self.server.json("POST", "/api/cpp/process/create",
                                           {"argv": ["no-such-program-xyz"]})
        self.assertError(status, body, 400, "spawn failed")

    def test_cwd_that_is_not_a_directory_is_400(self):
        status, body, _ = self.server.json("POST", "/api/cpp/process/create",
                                           {"argv": ["echo"], "cwd": "/no/such/dir"})
        self.assertError(status, body, 400, "cwd")

    def test_malformed_request_line_is_400(self):
        for raw in (b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9x\r\n\r\n",
                    b"\x00\x01\x02\r\n\r\n"):
            with self.subTest(request=raw):
                with self.server.raw_socket() as sock:
                    sock.sendall(raw)
                    data, _ = read_until_closed(sock, 10)
                status, headers, body, _ = split_response(data)
                self.assertError(status, json.loads(body), 400)
                self.assertEqual(headers["connection"], "close")

    def test_ambiguous_or_invalid_body_framing_is_400(self):
        # Content-Length with Transfer-Encoding is how requests are smuggled: refused.
        for raw in (b"POST /api/cpp/thread/pool/submit HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                    b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                    b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n"):
            with self.subTest(request=raw):
                with self.server.raw_socket() as sock:
                    sock.sendall(raw)
                    data, _ = read_until_closed(sock, 10)
                status, _, body, _ = split_response(data)
                self.assertError(status, json.loads(body), 400)

    def test_a_body_of_exactly_the_limit_is_accepted(self):
        payload = b'{"task": "fib", "n": 5}'
        status, body, _ = self.server.json(
            "POST", "/api/cpp/thread/pool/submit", raw=payload + b" " * (1024 - len(payload)),
            headers={"Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["value"], 5)
        status, body, _ = self.server.json(
            "POST", "/api/cpp/thread/pool/submit", raw=payload + b" " * (1025 - len(payload)),
            headers={"Content-Type": "application/json"})
        self.assertError(status, body, 413)

    def test_method_not_allowed_is_405(self):
        for method, path in (("GET", "/api/cpp/process/create"), ("PUT", "/health"),
                             ("POST", "/api/cpp/process/list"),
                             ("DELETE", "/api/cpp/thread/state/1")):
            with self.subTest(method=method, path=path):
                status, body, _ = self.server.json(method, path)
                self.assertError(status, body, 405)

    def test_unknown_path_is_404(self):
        for path in ("/", "/api", "/api/cpp/process", "/api/cpp/nothing/here", "/health/x"):
            with self.subTest(path=path):
                status, body, _ = self.server.json("GET", path)
                self.assertError(status, body, 404, "no such endpoint")

    def test_websocket_endpoint_without_upgrade_is_426(self):
        status, body, headers = self.server.json("GET", "/ws/events")
        self.assertError(status, body, 426)
        self.assertEqual(headers["Upgrade"], "websocket")

    def test_websocket_upgrade_with_a_bad_key_is_400(self):
        status, body, _ = self.server.json("GET", "/ws/events", headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "short"})
        self.assertError(status, body, 400)


# ---- limits reached: 429 / 503 naming the limit ------------------------------------------

class LimitsTest(ServerTestCase):
    server_args = ("--max-processes", "2", "--max-threads", "2", "--max-jobs", "1")
    server_env = {"ALLOWED_COMMANDS": "sleep"}

    def test_max_processes_reached_is_429(self):
        pids = [self.create_process(["sleep", "60"])["pid"] for _ in range(2)]
        try:
            status, body, _ = self.server.json("POST", "/api/cpp/process/create",
                                               {"argv": ["sleep", "60"]})
            self.assertError(status, body, 429)
            self.assertEqual(body["error"]["detail"]["limit"], "MAX_PROCESSES")
            self.assertEqual(body["error"]["detail"]["value"], 2)
        finally:
            for pid in pids:
                self.server.json("DELETE", f"/api/cpp/process/{pid}?grace_ms=100")
        # Room again once they ended.
        pid = self.create_process(["sleep", "60"])["pid"]
        self.server.json("DELETE", f"/api/cpp/process/{pid}?grace_ms=100")

    def test_max_threads_reached_is_429(self):
        # Long sleepers: the server's shutdown must stop them (they see the stop token).
        for _ in range(2):
            status, body, _ = self.server.json("POST", "/api/cpp/thread/create",
                                               {"task": "sleep", "ms": 600000})
            self.assertEqual(status, 201, body)
        status, body, _ = self.server.json("POST", "/api/cpp/thread/create",
                                           {"task": "sleep", "ms": 10})
        self.assertError(status, body, 429)
        self.assertEqual(body["error"]["detail"]["limit"], "MAX_THREADS")

    def test_max_jobs_reached_is_503(self):
        status, body, _ = self.server.json("POST", "/api/cpp/thread/pool/submit",
                                           {"task": "sleep", "ms": 60000,
                                            "mode": "background"})
        self.assertEqual(status, 202, body)
        for path, payload in (("/api/cpp/thread/pool/submit", {"mode": "background"}),
                              ("/api/cpp/process/pool/submit", {"mode": "background"}),
                              ("/api/cpp/comparison/benchmark/run", {"scenario": "io"})):
            with self.subTest(path=path):
                status, body, _ = self.server.json("POST", path, payload)
                self.assertError(status, body, 503)
                self.assertEqual(body["error"]["detail"]["limit"], "MAX_JOBS")
                self.assertEqual(body["error"]["detail"]["value"], 1)


class ConnectionLimitTest(ServerTestCase):
    server_args = ("--max-connections", "2")

    def test_max_connections_reached_is_503_and_the_server_recovers(self):
        def held_connection():
            # The server counts a closed connection until it has read the close: an
            # earlier client may still hold a slot for a moment, so poll for a free one.
            sock = self.server.raw_socket()
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = read_response(sock)
            if status == 200:
                self.assertEqual(headers["connection"], "keep-alive")
                return sock
            sock.close()
            return None

        first = wait_until(held_connection, 10, "a first connection slot")
        second = wait_until(held_connection, 10, "a second connection slot")
        with first, second:
            with self.server.raw_socket() as third:
                data, _ = read_until_closed(third, 10)
            status, _, body, _ = split_response(data)
            body = json.loads(body)
            self.assertError(status, body, 503)
            self.assertEqual(body["error"]["detail"]["limit"].upper(), "MAX_CONNECTIONS")
            self.assertEqual(body["error"]["detail"]["value"], 2)
        # Closed by the client: room again (the server notices the close when it reads).
        wait_until(lambda: self.server.request("GET", "/health")[0] == 200, 10,
                   "a connection slot")


# ---- slow and idle clients ---------------------------------------------------------------

class TimeoutTest(ServerTestCase):
    server_args = ("--request-timeout", "0.5", "--idle-timeout", "1")

    def test_a_client_that_sends_half_a_request_is_disconnected(self):
        with self.server.raw_socket() as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # no blank line: goes silent
            data, elapsed = read_until_closed(sock, 10)
        self.assertGreater(elapsed, 0.3, "closed before the request timeout")
        self.assertLess(elapsed, 5)
        if data:  # a 408 answer is allowed, nothing else
            self.assertTrue(data.startswith(b"HTTP/1.1 408"), data[:200])

    def test_a_client_that_trickles_a_request_is_disconnected(self):
        # One byte at a time, never finishing: the request timeout is for the whole request.
        with self.server.raw_socket() as sock:
            t0 = time.monotonic()
            closed = False
            for ch in b"GET /health HTTP/1.1\r\nHost: trickle.example\r\nX-Pad: aaaaaaaaaaaaa":
                try:
                    sock.sendall(bytes([ch]))
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                # Paced writes are the test's input, not synchronisation.
                threading.Event().wait(0.1)
            if not closed:
                read_until_closed(sock, 10)
            elapsed = time.monotonic() - t0
        self.assertLess(elapsed, 5)

    def test_an_idle_keep_alive_connection_is_closed(self):
        with self.server.raw_socket() as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            data, elapsed = read_until_closed(sock, 10)
        status, headers, _, rest = split_response(data)
        self.assertEqual(status, 200)
        self.assertEqual(headers["connection"], "keep-alive")
        self.assertEqual(rest, b"")
        self.assertGreater(elapsed, 0.7, "closed before the idle timeout")
        self.assertLess(elapsed, 6)

    def test_a_connection_that_never_sends_is_closed(self):
        with self.server.raw_socket() as sock:
            data, elapsed = read_until_closed(sock, 10)
        self.assertEqual(data, b"")
        self.assertLess(elapsed, 6)

    def test_a_slow_handler_is_not_cut_by_the_request_timeout(self):
        # The request timeout covers receiving the request, not the handler's work.
        status, body, _ = self.server.json("GET",
                                           "/api/cpp/thread/async-demo?coroutines=2&ms=1500")
        self.assertEqual(status, 200, body)


# ---- authentication -------------------------------------------------------------------

class AuthTest(ServerTestCase):
    server_args = ("--api-token", "secret")

    def test_mutating_endpoints_without_the_token_are_401(self):
        for method, path, payload in (
                ("POST", "/api/cpp/process/create", {"argv": ["echo"]}),
                ("DELETE", "/api/cpp/process/1", None),
                ("POST", "/api/cpp/process/pool/submit", {"function": "fib", "n": 5}),
                ("POST", "/api/cpp/thread/create", {"task": "fib", "n": 5}),
                ("POST", "/api/cpp/thread/pool/submit", {"task": "fib", "n": 5}),
                ("POST", "/api/cpp/comparison/benchmark/run", {"scenario": "io"})):
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": "secret"}, {"Authorization": "Bearer secret2"}):
                with self.subTest(method=method, path=path, headers=headers):
                    status, body, hdrs = self.server.json(method, path, payload, headers)
                    self.assertError(status, body, 401)
                    self.assertEqual(hdrs["WWW-Authenticate"], "Bearer")

    def test_mutating_endpoints_with_the_token_work(self):
        auth = {"Authorization": "Bearer secret"}
        status, body, _ = self.server.json("POST", "/api/cpp/thread/pool/submit",
                                           {"task": "fib", "n": 10}, auth)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["value"], 55)
        status, body, _ = self.server.json("POST", "/api/cpp/process/create",
                                           {"argv": ["sleep", "30"]}, auth)
        self.assertEqual(status, 201, body)
        status, body, _ = self.server.json("DELETE", f"/api/cpp/process/{body['pid']}",
                                           None, auth)
        self.assertEqual(status, 200, body)

    def test_read_only_endpoints_need_no_token(self):
        for path in ("/health", "/api/cpp/process/list", "/api/cpp/comparison/metrics",
                     "/api/cpp/comparison/results", "/openapi.json", "/metrics", "/docs"):
            with self.subTest(path=path):
                status, _, _ = self.server.request("GET", path)
                self.assertEqual(status, 200)


class StartupTest(unittest.TestCase):
    def test_a_non_loopback_bind_without_a_token_exits_2_naming_api_token(self):
        for extra, env in (((), {}), (("--api-token", ""), {})):
            with self.subTest(args=extra):
                server = Server(*extra, env=env, host="0.0.0.0")
                try:
                    r = subprocess.run([SERVER, *server.args], env=server.env,
                                       capture_output=True, text=True, timeout=30)
                finally:
                    server.cleanup()
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn("API_TOKEN", r.stderr)
        # The same from the environment.
        server = Server(env={"HOST": "0.0.0.0"})
        try:
            args = [a for a in server.args if a not in ("--host", "127.0.0.1")]
            r = subprocess.run([SERVER, *args], env=server.env, capture_output=True,
                               text=True, timeout=30)
        finally:
            server.cleanup()
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("API_TOKEN", r.stderr)

    def test_a_non_loopback_bind_with_a_token_starts(self):
        server = Server(host="0.0.0.0", env={"API_TOKEN": "secret"})
        try:
            server.start()
            status, body, _ = server.json("POST", "/api/cpp/thread/pool/submit",
                                          {"task": "fib", "n": 5})
            self.assertEqual(status, 401, body)
            code, _ = server.stop()
            self.assertEqual(code, 0)
        finally:
            server.cleanup()

    def test_the_io_model_is_announced_and_an_unknown_one_is_refused(self):
        for model, said in (("per-thread", "io_context per thread"),
                            ("shared", "shared io_context")):
            with self.subTest(model=model):
                server = Server("--io-model", model, "--workers", "3")
                try:
                    server.start()
                    self.assertIn(f"3 I/O threads, {said}", server.banner)
                    status, body, _ = server.json("GET", "/health")
                    self.assertEqual(status, 200, body)
                    code, _ = server.stop()
                    self.assertEqual(code, 0)
                finally:
                    server.cleanup()
        server = Server(env={"IO_MODEL": "threads"})
        try:
            r = subprocess.run([SERVER, *server.args], env=server.env, capture_output=True,
                               text=True, timeout=30)
        finally:
            server.cleanup()
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("io-model", r.stderr)
        self.assertIn("threads", r.stderr)


class SharedIoEndpointTest(EndpointTest):
    """Every endpoint again, with one io_context on all I/O threads (IO_MODEL=shared)."""
    server_env = {**EndpointTest.server_env, "IO_MODEL": "shared", "WORKERS": "3"}


# ---- restart persistence ------------------------------------------------------------------

class PersistenceTest(unittest.TestCase):
    def test_results_and_jobs_survive_a_restart(self):
        first = Server()
        second = None
        try:
            first.start()
            status, body, _ = first.json("POST", "/api/cpp/comparison/benchmark/run",
                                         {"scenario": "io", "tasks": 2, "n": 10})
            self.assertEqual(status, 202, body)
            job_id = body["id"]
            job = poll(lambda: first.json("GET", f"/api/cpp/jobs/{job_id}")[1],
                       lambda b: b["state"] == "done", 60, "the benchmark")
            status, body, _ = first.json("POST", "/api/cpp/thread/pool/submit",
                                         {"task": "fib", "n": 12, "mode": "background"})
            self.assertEqual(status, 202, body)
            fib_id = body["id"]
            wait_until(lambda: first.json("GET", f"/api/cpp/jobs/{fib_id}")[1]["state"] ==
                       "done", 60, "the fib job")
            code, _ = first.stop()
            self.assertEqual(code, 0, first.stderr())

            second = Server(database=first.database)
            second.start()
            status, body, _ = second.json("GET", "/api/cpp/comparison/results")
            self.assertEqual(status, 200, body)
            self.assertEqual(body["results"][0]["job_id"], job_id)
            self.assertEqual(body["results"][0]["id"], job["result"]["result_id"])
            status, body, _ = second.json("GET", f"/api/cpp/jobs/{job_id}")
            self.assertEqual(status, 200, body)
            self.assertEqual(body["state"], "done")
            self.assertEqual(body["result"]["job_id"], job_id)
            status, body, _ = second.json("GET", f"/api/cpp/jobs/{fib_id}")
            self.assertEqual(status, 200, body)
            self.assertEqual(body["result"]["value"], 144)
            status, body, _ = second.json("GET", "/api/cpp/jobs")
            self.assertEqual(status, 200, body)
            self.assertEqual({j["id"] for j in body["jobs"]}, {job_id, fib_id})
            code, _ = second.stop()
            self.assertEqual(code, 0, second.stderr())
        finally:
            first.cleanup()
            if second is not None:
                second.cleanup()

    def test_a_job_cut_by_shutdown_is_marked_interrupted_after_a_restart(self):
        first = Server()
        second = None
        try:
            first.start()
            status, body, _ = first.json("POST", "/api/cpp/process/pool/submit",
                                         {"function": "sleep", "ms": 60000,
                                          "mode": "background"})
            self.assertEqual(status, 202, body)
            job_id = body["id"]
            code, elapsed = first.stop()
            self.assertEqual(code, 0, first.stderr())
            self.assertLess(elapsed, 15)
            second = Server(database=first.database)
            second.start()
            status, body, _ = second.json("GET", f"/api/cpp/jobs/{job_id}")
            self.assertEqual(status, 200, body)
            self.assertNotIn(body["state"], ("queued", "running", "done"), body)
            code, _ = second.stop()
            self.assertEqual(code, 0, second.stderr())
        finally:
            first.cleanup()
            if second is not None:
                second.cleanup()


# ---- shutdown cleanliness -------------------------------------------------------------

class ShutdownTest(unittest.TestCase):
    GRACE = 1.0

    def start(self):
        server = Server("--shutdown-grace", str(self.GRACE),
                        env={"ALLOWED_COMMANDS": "sleep,sh"})
        self.addCleanup(server.cleanup)
        return server.start()

    def test_sigterm_terminates_and_reaps_every_child_and_grandchild(self):
        server = self.start()
        server_pid = server.proc.pid
        pids = []
        for argv in (["sleep", "100"], ["sleep", "100"], ["sleep", "100"],
                     ["sh", "-c", "sleep 100 & sleep 100"],
                     ["sh", "-c", "trap '' TERM; sleep 100"]):
            status, body, _ = server.json("POST", "/api/cpp/process/create", {"argv": argv})
            self.assertEqual(status, 201, body)
            pids.append(body["pid"])
        status, body, _ = server.json("POST", "/api/cpp/thread/create",
                                      {"task": "sleep", "ms": 600000})
        self.assertEqual(status, 201, body)
        # The pool's workers exist and work.
        status, body, _ = server.json("POST", "/api/cpp/process/pool/submit",
                                      {"function": "fib", "n": 5})
        self.assertEqual(status, 200, body)
        # Wait until both shells have their children (the grandchildren of the server).
        for sh in pids[3:]:
            wait_until(lambda: children_of(sh), 10, f"the children of sh {sh}")
        tree = descendants(server_pid)
        grandchildren = set(tree) - set(children_of(server_pid))
        self.assertTrue(set(pids) <= set(tree), (pids, tree))
        self.assertGreaterEqual(len(grandchildren), 2, tree)
        workers = set(children_of(server_pid)) - set(pids)
        self.assertEqual(len(workers), 2, f"process-pool workers: {workers}")

        code, elapsed = server.stop()
        self.assertEqual(code, 0, server.stderr())
        self.assertLess(elapsed, self.GRACE + 10)
        # The server waited for its children; grandchildren may need init to reap them.
        try:
            wait_until(lambda: not [p for p, t in tree.items() if alive(p, t)], 5,
                       "every descendant to be gone")
        except AssertionError:
            left = {p: proc_stat(p) for p, t in tree.items() if alive(p, t)}
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.fail(f"left behind after shutdown: {left} (of {tree}; workers {workers})")

    def test_sigterm_also_ends_a_grandchild_that_left_the_process_group(self):
        server = self.start()
        # setsid: the grandchild leads a session and group of its own, so signalling the
        # child's process group does not reach it; it is still the server's descendant.
        status, body, _ = server.json("POST", "/api/cpp/process/create",
                                      {"argv": ["sh", "-c", "setsid sleep 101 & sleep 100"]})
        self.assertEqual(status, 201, body)
        pid = body["pid"]

        def escaped():
            for child in children_of(pid):
                try:
                    with open(f"/proc/{child}/cmdline", "rb") as f:
                        if f.read() == b"sleep\x00101\x00":  # exec'd, so setsid() is done
                            return child
                except FileNotFoundError:
                    pass
            return None
        grandchild = wait_until(escaped, 10, "the grandchild in a session of its own")
        started = proc_stat(grandchild)[2]
        code, elapsed = server.stop()
        self.assertEqual(code, 0, server.stderr())
        try:
            wait_until(lambda: not alive(grandchild, started), 5, "the grandchild to be gone")
        except AssertionError:
            os.kill(grandchild, signal.SIGKILL)
            self.fail(f"grandchild {grandchild} (setsid sleep 101) outlived the server")

    def test_a_second_sigterm_during_the_grace_period_does_not_cut_the_cleanup(self):
        server = self.start()
        # Ignores SIGTERM, and so does its child: only the SIGKILL after the grace ends them.
        status, body, _ = server.json("POST", "/api/cpp/process/create",
                                      {"argv": ["sh", "-c", "trap '' TERM; sleep 100 & sleep 100"]})
        self.assertEqual(status, 201, body)
        pid = body["pid"]
        wait_until(lambda: children_of(pid), 10, f"the children of sh {pid}")
        tree = descendants(server.proc.pid)
        server.terminate()
        # The first signal was handled once the server refuses new work (503 or closed).
        def stopping():
            try:
                return server.request("GET", "/health", timeout=5)[0] == 503
            except (OSError, NoResponse):  # refused, or closed by the stopping server
                return True
        wait_until(stopping, 10, "the server to start stopping")
        server.proc.send_signal(signal.SIGTERM)
        code, elapsed = server.stop()
        self.assertEqual(code, 0, server.stderr())
        self.assertLess(elapsed, self.GRACE + 10)
        wait_until(lambda: not [p for p, t in tree.items() if alive(p, t)], 5,
                   "every descendant to be gone")

    def test_sigterm_with_a_stream_and_a_job_in_flight_exits_promptly(self):
        server = self.start()
        status, body, _ = server.json("POST", "/api/cpp/process/create",
                                      {"argv": ["sleep", "100"]})
        self.assertEqual(status, 201, body)
        pid = body["pid"]
        started = proc_stat(pid)[2]
        # A background job that would run for a minute: shutdown must cancel it.
        status, body, _ = server.json("POST", "/api/cpp/thread/pool/submit",
                                      {"task": "sleep", "ms": 60000, "mode": "background"})
        self.assertEqual(status, 202, body)
        # A client following the output of a process that will not end by itself.
        stream = server.raw_socket(timeout=30)
        self.addCleanup(stream.close)
        stream.sendall(f"GET /api/cpp/process/{pid}/output HTTP/1.1\r\nHost: x\r\n\r\n"
                       .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = stream.recv(4096)
            self.assertTrue(chunk, "closed before the response head")
            head += chunk
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)

        code, elapsed = server.stop()
        self.assertEqual(code, 0, server.stderr())
        self.assertLess(elapsed, self.GRACE + 10)
        read_until_closed(stream, 10)
        self.assertFalse(alive(pid, started), "the followed process is still running")
        # Stopped accepting: nobody listens on the port any more.
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()

    def test_sigterm_closes_websocket_clients_with_going_away(self):
        import websockets

        server = self.start()

        async def session():
            uri = f"ws://127.0.0.1:{server.port}/ws/events"
            async with websockets.connect(uri, open_timeout=10, close_timeout=5) as ws:
                hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
                self.assertEqual(hello["type"], "hello")
                server.terminate()
                try:
                    while True:
                        await asyncio.wait_for(ws.recv(), 20)
                except websockets.ConnectionClosed as closed:
                    return closed

        closed = asyncio.run(asyncio.wait_for(session(), 60))
        code, elapsed = server.stop()
        self.assertEqual(code, 0, server.stderr())
        self.assertLess(elapsed, self.GRACE + 10)
        # A close frame with 1001 (going away), not a dropped connection (1006).
        self.assertIsNotNone(closed.rcvd, f"no close frame from the server: {closed}")
        self.assertEqual(closed.rcvd.code, 1001)


# ---- Swagger UI in a real browser -----------------------------------------------------

class OpblockText(html.parser.HTMLParser):
    """Collects the text inside elements whose class list holds "opblock"."""
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
            "source", "track", "wbr"}

    def __init__(self):
        super().__init__()
        self.stack = []      # for each open element: is it an opblock?
        self.blocks = []     # text of each opblock
        self.depth = 0       # open opblock elements

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        is_block = "opblock" in (dict(attrs).get("class") or "").split()
        self.stack.append(is_block)
        if is_block:
            self.depth += 1
            self.blocks.append("")

    def handle_endtag(self, tag):
        if tag in self.VOID or not self.stack:
            return
        if self.stack.pop():
            self.depth -= 1

    def handle_data(self, data):
        if self.depth > 0:
            self.blocks[-1] += data


@unittest.skipUnless(os.path.exists(CHROMIUM), f"{CHROMIUM} is not installed")
class SwaggerUiTest(ServerTestCase):
    def test_swagger_ui_renders_every_operation_in_headless_chromium(self):
        with tempfile.TemporaryDirectory(prefix="ptk-chromium-") as profile:
            r = subprocess.run(
                [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom",
                 f"http://127.0.0.1:{self.server.port}/docs"],
                capture_output=True, text=True, timeout=180)
        dom = r.stdout
        self.assertIn('id="swagger-ui"', dom, r.stderr[-2000:])
        parser = OpblockText()
        parser.feed(dom)
        rendered = " ".join(parser.blocks)
        self.assertTrue(parser.blocks, f"no element with class opblock; DOM: {dom[:2000]}")
        for method, path in ISSUE_ENDPOINTS:
            with self.subTest(path=path):
                self.assertIn(path, rendered)
        self.assertIn("ptk-server", dom)  # the title from /openapi.json


def main():
    global SERVER
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    parser.add_argument("--server", required=True, help="the ptk-server binary")
    args, rest = parser.parse_known_args()
    SERVER = os.path.abspath(args.server)
    if not os.access(SERVER, os.X_OK):
        sys.exit(f"test_server.py: {SERVER} is not an executable")
    unittest.main(module=__name__, argv=[sys.argv[0], *rest], verbosity=2)


if __name__ == "__main__":
    main()
