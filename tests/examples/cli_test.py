#!/usr/bin/env python3
"""End-to-end tests of the example programs over real sockets: `cqrs send`, `cqrs tail` and
`cqrs_event_listener` run as child processes against a real server process
(cqrs_test_cli_server: the user service plus clitest.v1.Echo) on kernel-chosen ports.

    cli_test.py --cqrs BIN --listener BIN --server BIN --descriptor_set FILE [unittest args]

Every wait is for an expected line, under a deadline; nothing sleeps to synchronize.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

DEADLINE_S = 30
PATHS = None  # Parsed from the command line in main().


class Proc:
    """A child process whose stdout and stderr lines are collected by reader threads."""

    def __init__(self, args, name):
        self.name = name
        self.args = [str(a) for a in args]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     encoding="utf-8", bufsize=1)
        self.cv = threading.Condition()
        self.lines = {"stdout": [], "stderr": []}
        self.cursor = {"stdout": 0, "stderr": 0}
        self.closed = {"stdout": False, "stderr": False}
        self.threads = [threading.Thread(target=self._read, args=(stream,), daemon=True)
                        for stream in ("stdout", "stderr")]
        for thread in self.threads:
            thread.start()

    def _read(self, stream):
        pipe = getattr(self.proc, stream)
        for line in pipe:
            with self.cv:
                self.lines[stream].append(line.rstrip("\n"))
                self.cv.notify_all()
        pipe.close()
        with self.cv:
            self.closed[stream] = True
            self.cv.notify_all()

    def output(self):
        with self.cv:
            return ("%s %s\n--- stdout:\n%s\n--- stderr:\n%s" %
                    (self.name, " ".join(self.args), "\n".join(self.lines["stdout"]),
                     "\n".join(self.lines["stderr"])))

    def expect(self, pattern, stream="stdout", timeout=DEADLINE_S):
        """Waits for the first line after the last matched one (on `stream`) that matches."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                lines = self.lines[stream]
                for i in range(self.cursor[stream], len(lines)):
                    match = regex.search(lines[i])
                    if match:
                        self.cursor[stream] = i + 1
                        return match
                if self.closed[stream]:
                    raise AssertionError("%s ended before printing a line matching %r on %s\n%s"
                                         % (self.name, pattern, stream, self._output_locked()))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("%s printed no line matching %r on %s within %ss\n%s"
                                         % (self.name, pattern, stream, timeout,
                                            self._output_locked()))
                self.cv.wait(remaining)

    def _output_locked(self):
        return ("--- stdout:\n%s\n--- stderr:\n%s" %
                ("\n".join(self.lines["stdout"]), "\n".join(self.lines["stderr"])))

    def stdout_lines(self):
        with self.cv:
            return list(self.lines["stdout"])

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=DEADLINE_S):
        code = self.proc.wait(timeout=timeout)
        for thread in self.threads:
            thread.join(timeout)
        return code

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for thread in self.threads:
            thread.join(DEADLINE_S)


class Server:
    """cqrs_test_cli_server; `gateway_port` pins the gateway's port (for restarts)."""

    def __init__(self, gateway_port=0):
        self.proc = Proc([PATHS.server, "--gateway_port", gateway_port], "server")
        self.port = int(self.proc.expect(r"^PORT (\d+)$").group(1))
        self.gateway = int(self.proc.expect(r"^GATEWAY (\d+)$").group(1))
        self.epoch = self.proc.expect(r"^EPOCH (\d+)$").group(1)
        self.address = "127.0.0.1:%d" % self.port
        self.url = "ws://127.0.0.1:%d/events" % self.gateway

    def stop(self):
        self.proc.signal(signal.SIGTERM)
        self.proc.expect(r"^STOPPED")
        code = self.proc.wait()
        assert code == 0, self.proc.output()


def cqrs(*args, timeout=DEADLINE_S):
    """Runs the command-line tool; returns (exit code, stdout, stderr)."""
    done = subprocess.run([PATHS.cqrs] + [str(a) for a in args], capture_output=True,
                          encoding="utf-8", timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SilentServer:
    """Speaks the handshake of proto/README.md (HelloAck for Hello), then answers nothing."""

    HELLO_ACK = bytes.fromhex("00000004" "12020801")  # Frame{hello_ack{protocol_version: 1}}

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            try:
                if conn.recv(4096):  # The Hello (or its first bytes).
                    conn.sendall(self.HELLO_ACK)
            except OSError:
                pass

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for conn in self.conns:
            conn.close()


class Proxy:
    """A TCP proxy to a gateway whose connections can be cut, and new ones refused, on demand."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.refusing = threading.Event()
        self.lock = threading.Lock()
        self.conns = []  # Open now.
        self.every = []  # Ever opened, closed by close().
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self.refusing.is_set() or self.sock.fileno() < 0:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
                self.every += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        """Drops every connection and refuses new ones until resume()."""
        self.refusing.set()
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def resume(self):
        self.refusing.clear()

    def close(self):
        self.cut()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            for s in self.every:
                s.close()


def create_user(server, name, *flags):
    code, out, err = cqrs("send", server.address, "users.v1.CreateUser",
                          json.dumps({"name": name}), *flags)
    assert code == 0, (code, out, err)
    return json.loads(out)["payload"]["userId"]


class CliSendTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def send(self, *args):
        return cqrs("send", self.server.address, *args)

    def test_ok_prints_the_response_as_json(self):
        code, out, err = self.send("users.v1.CreateUser", '{"name": "Bob"}')
        self.assertEqual(code, 0, err)
        self.assertEqual(out.count("\n"), 1, out)  # One line.
        response = json.loads(out)
        self.assertEqual(response["status"], "OK")
        self.assertEqual(response["payload"]["@type"],
                         "type.googleapis.com/users.v1.CreateUserReply")
        self.assertRegex(response["payload"]["userId"], r"^[0-9a-f-]{36}$")
        self.assertEqual(len(response["eventOffsets"]), 1)
        self.assertIn("eventEpoch", response)
        self.assertRegex(response["commandId"], r"^[0-9a-f-]{36}$")

    def test_rejected_exits_1_with_the_error_code(self):
        code, out, err = self.send("users.v1.CreateUser", '{"name": "   "}')
        self.assertEqual(code, 1, (out, err))
        response = json.loads(out)
        self.assertEqual(response["status"], "REJECTED")
        self.assertEqual(response["error"]["errorCode"], "USER_NAME_EMPTY")

    def test_id_and_subject(self):
        user = create_user(self.server, "Carol")
        command_id = "rename-%s" % user
        first = self.send("users.v1.RenameUser", '{"name": "Caroline"}', "--subject", user,
                          "--id=%s" % command_id)
        self.assertEqual(first[0], 0, first)
        response = json.loads(first[1])
        self.assertEqual(response["commandId"], command_id)
        # The same id again: the server answers with the first response (idempotency).
        again = self.send("users.v1.RenameUser", '{"name": "Caroline"}', "--subject", user,
                          "--id", command_id)
        self.assertEqual(again[0], 0, again)
        self.assertEqual(json.loads(again[1])["eventOffsets"], response["eventOffsets"])
        missing = self.send("users.v1.DeleteUser", "--subject=no-such-user")
        self.assertEqual(missing[0], 1, missing)
        self.assertEqual(json.loads(missing[1])["error"]["errorCode"], "USER_NOT_FOUND")

    def test_descriptor_set_for_a_type_not_linked_into_the_cli(self):
        request = {"text": "héllo", "at": "2024-01-02T03:04:05.500Z", "numbers": ["1", -2]}
        code, out, err = self.send("clitest.v1.Echo", json.dumps(request),
                                   "--descriptor_set=%s" % PATHS.descriptor_set)
        self.assertEqual(code, 0, err)
        response = json.loads(out)
        self.assertEqual(response["status"], "OK")
        # The server decoded what the CLI encoded, and the CLI expands the reply.
        self.assertEqual(response["payload"], {
            "@type": "type.googleapis.com/clitest.v1.EchoReply", "text": "héllo",
            "length": len("héllo".encode()), "at": "2024-01-02T03:04:05.500Z",
            "numbers": ["1", "-2"]})
        self.assertEqual(len(response["eventOffsets"]), 2)

    def test_type_the_server_does_not_handle_is_not_found(self):
        code, out, err = self.send("clitest.v1.Echoed", '{"text": "x"}', "--descriptor_set",
                                   PATHS.descriptor_set)
        self.assertEqual(code, 1, (out, err))
        self.assertEqual(json.loads(out)["status"], "NOT_FOUND")

    def test_unknown_type(self):
        code, out, err = self.send("clitest.v1.Echo", '{"text": "x"}')
        self.assertEqual(code, 2, (out, err))
        self.assertEqual(out, "")
        self.assertIn("unknown message type 'clitest.v1.Echo'", err)
        self.assertIn("--descriptor_set=FILE", err)
        self.assertIn("protoc --include_imports --descriptor_set_out=FILE", err)
        self.assertIn("users.v1.CreateUser", err)  # Among the known types.
        code, out, err = self.send("CreateUser", '{"name": "x"}')
        self.assertEqual(code, 2, (out, err))
        self.assertIn("did you mean users.v1.CreateUser?", err)

    def test_bad_json(self):
        code, out, err = self.send("users.v1.CreateUser", '{"name": ')
        self.assertEqual(code, 2, (out, err))
        self.assertIn("the JSON is not a valid users.v1.CreateUser: ", err)
        code, out, err = self.send("users.v1.CreateUser", '{"nmae": "Bob"}')
        self.assertEqual(code, 2, (out, err))
        self.assertIn("nmae", err)

    def test_refused_connection_names_the_address(self):
        address = "127.0.0.1:%d" % free_port()
        code, out, err = cqrs("send", address, "users.v1.CreateUser", '{"name": "x"}')
        self.assertEqual(code, 3, (out, err))
        self.assertIn("cannot connect to %s: Connection refused" % address, err)

    def test_timeout_names_the_timeout(self):
        silent = SilentServer()
        try:
            start = time.monotonic()
            code, out, err = cqrs("send", "127.0.0.1:%d" % silent.port, "users.v1.CreateUser",
                                  '{"name": "x"}', "--timeout=1s", "--id=slow-1")
            elapsed = time.monotonic() - start
        finally:
            silent.close()
        self.assertEqual(code, 3, (out, err))
        self.assertIn("no response from 127.0.0.1:%d within --timeout=1s" % silent.port, err)
        self.assertIn("--id=slow-1", err)
        self.assertLess(elapsed, 10)

    def test_usage_errors_exit_2(self):
        cases = [
            [],
            ["frobnicate"],
            ["send", self.server.address],
            ["send", "localhost", "users.v1.CreateUser"],
            ["send", "127.0.0.1:99999", "users.v1.CreateUser"],
            ["send", self.server.address, "users.v1.CreateUser", "--no_such_flag=1"],
            ["send", self.server.address, "users.v1.CreateUser", "--timeout=soon"],
            ["send", self.server.address, "users.v1.CreateUser", "--channel=users"],
            ["send", self.server.address, "users.v1.CreateUser", "--descriptor_set=/nonexistent"],
            ["send", self.server.address, "users.v1.CreateUser", "--descriptor_set=%s" % __file__],
            ["tail", "--subject=x"],
            ["tail", "http://127.0.0.1:1/events"],
        ]
        for args in cases:
            code, out, err = cqrs(*args)
            self.assertEqual(code, 2, (args, out, err))
            self.assertTrue(err.startswith("cqrs: "), (args, err))

    def test_help(self):
        for args in (["--help"], ["help"], ["-h"]):
            code, out, err = cqrs(*args)
            self.assertEqual(code, 0, (args, err))
            for text in ("cqrs send HOST:PORT TYPE [JSON]", "cqrs tail", "Exit codes:",
                         "--descriptor_set", "--timeout", "--channel"):
                self.assertIn(text, out, args)
        for args in (["help", "send"], ["send", "--help"]):
            code, out, err = cqrs(*args)
            self.assertEqual(code, 0, (args, err))
            self.assertIn("--timeout=10s", out)
            self.assertIn("--subject", out)
            self.assertIn("  3  transport error", out)
            self.assertNotIn("--channel", out)
        code, out, _ = cqrs("help", "tail")
        self.assertEqual(code, 0)
        self.assertIn("--from", out)
        self.assertNotIn("--subject", out)


class CliTailTest(unittest.TestCase):
    def setUp(self):
        self.server = Server()
        self.procs = []

    def tearDown(self):
        for proc in self.procs:
            proc.stop()
        self.server.stop()

    def tail(self, *flags):
        proc = Proc([PATHS.cqrs, "tail", self.server.url, "--reconnect_delay=100ms"] +
                    list(flags), "cqrs tail")
        self.procs.append(proc)
        return proc

    @staticmethod
    def next_event(proc):
        return json.loads(proc.expect(r"^\{.*\}$").group(0))

    def test_prints_events_as_json_lines_and_resumes_after_a_restart(self):
        tail = self.tail("--channel=users")
        epoch = tail.expect(r"^cqrs tail: subscribed to users at offset 0 \(epoch (\d+)\)$",
                            "stderr").group(1)
        bob = create_user(self.server, "Bob")
        event = self.next_event(tail)
        self.assertEqual(event["payload"], {"@type": "type.googleapis.com/users.v1.UserCreated",
                                            "userId": bob, "name": "Bob"})
        self.assertEqual((event["offset"], event["epoch"], event["channel"]), ("1", epoch, "users"))
        self.assertEqual(event["type"], "users.v1.UserCreated")
        # Events of other channels are not printed: Echo's two events take offsets 2 and 3.
        code, _, err = cqrs("send", self.server.address, "clitest.v1.Echo", '{"text": "x"}',
                            "--descriptor_set", PATHS.descriptor_set)
        self.assertEqual(code, 0, err)
        create_user(self.server, "Alice")
        event = self.next_event(tail)
        self.assertEqual((event["offset"], event["payload"]["name"]), ("4", "Alice"))

        # The server restarts on the same gateway port, with a new epoch (empty history).
        gateway = self.server.gateway
        self.server.stop()
        tail.expect(r"^cqrs tail: .*; reconnecting$", "stderr")
        self.server = Server(gateway_port=gateway)
        match = tail.expect(r"^cqrs tail: the epoch changed from (\d+) to (\d+)", "stderr")
        self.assertEqual(match.group(1), epoch)
        new_epoch = match.group(2)
        self.assertNotEqual(new_epoch, epoch)
        tail.expect(r"^cqrs tail: subscribed to users at offset 0 \(epoch %s\)$" % new_epoch,
                    "stderr")
        carol = create_user(self.server, "Carol")
        event = self.next_event(tail)
        self.assertEqual((event["offset"], event["epoch"], event["payload"]["userId"]),
                         ("1", new_epoch, carol))
        tail.signal(signal.SIGINT)
        self.assertEqual(tail.wait(), 0, tail.output())
        self.assertEqual(len(tail.stdout_lines()), 3, tail.output())

    def test_from_replays_what_the_gateway_holds(self):
        dave = create_user(self.server, "Dave")
        code, out, err = cqrs("send", self.server.address, "clitest.v1.Echo", '{"text": "hi"}',
                              "--descriptor_set", PATHS.descriptor_set)
        self.assertEqual(code, 0, err)
        epoch = json.loads(out)["eventEpoch"]

        # With the descriptor set every payload is expanded.
        tail = self.tail("--channel=users", "--channel=echo", "--from=0", "--epoch=%s" % epoch,
                         "--descriptor_set=%s" % PATHS.descriptor_set)
        events = [self.next_event(tail) for _ in range(3)]
        self.assertEqual([e["offset"] for e in events], ["1", "2", "3"])
        self.assertEqual(events[0]["payload"]["userId"], dave)
        self.assertEqual(events[1]["payload"],
                         {"@type": "type.googleapis.com/clitest.v1.Echoed", "text": "hi"})
        self.assertEqual(events[2]["payload"],
                         {"@type": "type.googleapis.com/google.protobuf.Struct",
                          "value": {"text": "hi"}})

        # Without it, the unknown payload is kept as its type URL and base64 bytes.
        plain = self.tail("--channel=echo", "--from=0")
        event = self.next_event(plain)
        self.assertEqual(event["offset"], "2")
        self.assertEqual(event["payload"], {"@type": "type.googleapis.com/clitest.v1.Echoed",
                                            "value": "CgJoaQ=="})  # Echoed{text: "hi"}
        self.assertEqual(self.next_event(plain)["offset"], "3")
        plain.signal(signal.SIGTERM)
        self.assertEqual(plain.wait(), 0, plain.output())


class EventListenerTest(unittest.TestCase):
    def setUp(self):
        self.server = Server()
        self.procs = []
        self.proxy = None

    def tearDown(self):
        for proc in self.procs:
            proc.stop()
        if self.proxy:
            self.proxy.close()
        self.server.stop()

    def listener(self, name, url, *flags):
        proc = Proc([PATHS.listener, "--name", name, "--url", url, "--reconnect_delay=100ms",
                     "--reconnect_max=1s"] + list(flags), "listener " + name)
        self.procs.append(proc)
        return proc

    @staticmethod
    def events(proc, name):
        return [line for line in proc.stdout_lines() if line.startswith("[%s] #" % name)]

    def test_prints_user_events_and_goes_on_after_a_restart(self):
        a = self.listener("A", self.server.url)
        b = self.listener("B", self.server.url, "--channel=users", "--channel", "echo")
        c = self.listener("C", self.server.url, "--format=json")  # The other subprotocol.
        epoch = a.expect(r"^\[A\] subscribed to users at offset 0 \(epoch (\d+)\)$").group(1)
        self.assertEqual(epoch, self.server.epoch)
        b.expect(r"^\[B\] subscribed to users,echo at offset 0 \(epoch %s\)$" % epoch)
        c.expect(r"^\[C\] subscribed to users at offset 0 \(epoch %s\)$" % epoch)

        bob = create_user(self.server, "Bob")
        code, _, err = cqrs("send", self.server.address, "users.v1.RenameUser",
                            '{"name": "Robert"}', "--subject", bob)
        self.assertEqual(code, 0, err)
        code, _, err = cqrs("send", self.server.address, "users.v1.DeleteUser",
                            json.dumps({"userId": bob}))
        self.assertEqual(code, 0, err)
        code, _, err = cqrs("send", self.server.address, "clitest.v1.Echo", '{"text": "hi"}',
                            "--descriptor_set", PATHS.descriptor_set)
        self.assertEqual(code, 0, err)
        expected = [
            "#1 users.v1.UserCreated  User 'Bob' created (id %s)" % bob,
            "#2 users.v1.UserRenamed  User 'Bob' renamed to 'Robert' (id %s)" % bob,
            "#3 users.v1.UserDeleted  User 'Robert' deleted (id %s)" % bob,
        ]
        for line in expected:
            for name, proc in (("A", a), ("B", b), ("C", c)):
                proc.expect("^" + re.escape("[%s] %s" % (name, line)) + "$")
        c.signal(signal.SIGINT)
        self.assertEqual(c.wait(), 0, c.output())
        self.assertEqual(len(self.events(c, "C")), 3, c.output())
        # Types the listener has no typed handler for: the type and the payload's JSON, or
        # what is known about a type it does not link.
        b.expect(r"^\[B\] #4 clitest\.v1\.Echoed  \(4 bytes; unknown type clitest\.v1\.Echoed\)$")
        b.expect(r'^\[B\] #5 google\.protobuf\.Struct  \{"text":"hi"\}$')

        # A new server on the same gateway port: a new epoch, so the listener says its
        # position is gone and goes on from the start of the new history.
        gateway = self.server.gateway
        self.server.stop()
        a.expect(r"^\[A\] connection lost: .*; reconnecting$")
        self.server = Server(gateway_port=gateway)
        a.expect(r"^\[A\] epoch changed from %s to (\d+) \(the server lost its history\): "
                 r"events after offset 3 of epoch %s are gone" % (epoch, epoch))
        new_epoch = a.expect(r"^\[A\] reconnected: subscribed to users at offset 0 "
                             r"\(epoch (\d+)\)$").group(1)
        self.assertNotEqual(new_epoch, epoch)
        b.expect(r"^\[B\] reconnected: subscribed to users,echo at offset 0 \(epoch %s\)$"
                 % new_epoch)
        dave = create_user(self.server, "Dave")
        a.expect(r"^\[A\] #1 users\.v1\.UserCreated  User 'Dave' created \(id %s\)$" % dave)
        b.expect(r"^\[B\] #1 users\.v1\.UserCreated  User 'Dave' created \(id %s\)$" % dave)

        a.signal(signal.SIGINT)
        self.assertEqual(a.wait(), 0, a.output())
        self.assertEqual(a.stdout_lines()[-1], "[A] stopped at offset 1 (epoch %s)" % new_epoch)
        self.assertEqual(len(self.events(a, "A")), 4, a.output())
        b.signal(signal.SIGTERM)
        self.assertEqual(b.wait(), 0, b.output())
        self.assertEqual(len(self.events(b, "B")), 6, b.output())

    def test_resumes_after_its_last_offset_when_the_connection_comes_back(self):
        self.proxy = Proxy(self.server.gateway)
        a = self.listener("A", "ws://127.0.0.1:%d/events" % self.proxy.port)
        epoch = a.expect(r"^\[A\] subscribed to users at offset 0 \(epoch (\d+)\)$").group(1)
        first = create_user(self.server, "First")
        a.expect(r"^\[A\] #1 users\.v1\.UserCreated  User 'First' created \(id %s\)$" % first)

        self.proxy.cut()
        a.expect(r"^\[A\] connection lost: .*; reconnecting$")
        second = create_user(self.server, "Second")
        third = create_user(self.server, "Third")
        self.proxy.resume()
        a.expect(r"^\[A\] reconnected: subscribed to users at offset 1 \(epoch %s\)$" % epoch)
        a.expect(r"^\[A\] #2 users\.v1\.UserCreated  User 'Second' created \(id %s\)$" % second)
        a.expect(r"^\[A\] #3 users\.v1\.UserCreated  User 'Third' created \(id %s\)$" % third)
        fourth = create_user(self.server, "Fourth")
        a.expect(r"^\[A\] #4 users\.v1\.UserCreated  User 'Fourth' created \(id %s\)$" % fourth)

        a.signal(signal.SIGTERM)
        self.assertEqual(a.wait(), 0, a.output())
        # Each event exactly once, in order: nothing lost, nothing repeated.
        self.assertEqual([line.split()[1] for line in self.events(a, "A")],
                         ["#1", "#2", "#3", "#4"], a.output())

    def test_usage(self):
        code = subprocess.run([PATHS.listener, "--format=xml"], capture_output=True,
                              timeout=DEADLINE_S).returncode
        self.assertEqual(code, 2)
        done = subprocess.run([PATHS.listener, "--help"], capture_output=True, text=True,
                              timeout=DEADLINE_S)
        self.assertEqual(done.returncode, 0)
        self.assertIn("--channel=users", done.stdout)


def main():
    global PATHS
    parser = argparse.ArgumentParser()
    for flag in ("--cqrs", "--listener", "--server", "--descriptor_set"):
        parser.add_argument(flag, required=True)
    PATHS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
