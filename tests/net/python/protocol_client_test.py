#!/usr/bin/env python3
"""An independent client, written from proto/README.md and the .proto files alone, against a
real cqrs server process (cqrs_test_user_server). Uses only Debian's python3-protobuf.

    protocol_client_test.py <server binary> <dir with generated *_pb2.py>
"""

import os
import signal
import socket
import struct
import subprocess
import sys
import unittest

SERVER, PB_DIR = sys.argv[1], sys.argv[2]
sys.path.insert(0, PB_DIR)

from cqrs.v1 import command_pb2, frame_pb2  # noqa: E402
from users.v1 import users_pb2  # noqa: E402

DEADLINE_S = 10


def encode(frame):
    body = frame.SerializeToString()
    return struct.pack(">I", len(body)) + body


class Peer:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
        self.buf = b""

    def send(self, frame):
        self.sock.sendall(encode(frame))

    def send_raw(self, data):
        self.sock.sendall(data)

    def read(self):
        """The next frame, or None at EOF."""
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    frame = frame_pb2.Frame()
                    frame.ParseFromString(self.buf[4 : 4 + n])
                    self.buf = self.buf[4 + n :]
                    return frame
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def hello(self):
        frame = frame_pb2.Frame()
        frame.hello.protocol_version = 1
        frame.hello.client_name = "python"
        self.send(frame)
        ack = self.read()
        assert ack.WhichOneof("kind") == "hello_ack", ack
        return ack.hello_ack

    def close(self):
        self.sock.close()


def create_user(command_id, name, subject="s"):
    frame = frame_pb2.Frame()
    frame.command.id = command_id
    frame.command.subject = subject
    create = users_pb2.CreateUser(name=name)
    frame.command.payload.Pack(create)
    return frame


class ServerProcess:
    def __enter__(self):
        self.proc = subprocess.Popen([SERVER, "--drain-ms", "2000"], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=DEADLINE_S)


class ProtocolTest(unittest.TestCase):
    def test_create_user_ok_then_rejected_then_duplicate(self):
        with ServerProcess() as server:
            peer = Peer(server.port)
            ack = peer.hello()
            self.assertEqual(ack.protocol_version, 1)
            self.assertEqual(ack.max_frame_bytes, 4 * 1024 * 1024)

            peer.send(create_user("py-1", "Bob"))
            response = peer.read().response
            self.assertEqual(response.command_id, "py-1")
            self.assertEqual(response.status, command_pb2.CommandResponseEnvelope.OK)
            reply = users_pb2.CreateUserReply()
            self.assertTrue(response.payload.Unpack(reply))
            self.assertEqual(len(reply.user_id), 36)
            self.assertEqual(len(response.event_offsets), 1)

            peer.send(create_user("py-2", ""))
            rejected = peer.read().response
            self.assertEqual(rejected.status, command_pb2.CommandResponseEnvelope.REJECTED)
            self.assertEqual(rejected.error.error_code, "USER_NAME_EMPTY")

            # The same id again: the first response, not a second user.
            peer.send(create_user("py-1", "Bob"))
            again = peer.read().response
            self.assertEqual(again.SerializeToString(), response.SerializeToString())
            peer.close()

    def test_pipelined_commands_all_answered_by_id(self):
        with ServerProcess() as server:
            peer = Peer(server.port)
            peer.hello()
            ids = ["pipe-%d" % i for i in range(200)]
            peer.send_raw(b"".join(encode(create_user(i, "user " + i, subject=i)) for i in ids))
            seen = set()
            while len(seen) < len(ids):
                frame = peer.read()
                self.assertEqual(frame.WhichOneof("kind"), "response")
                self.assertEqual(frame.response.status, command_pb2.CommandResponseEnvelope.OK)
                seen.add(frame.response.command_id)
            self.assertEqual(seen, set(ids))
            peer.close()

    def test_bad_input_gets_precise_errors(self):
        with ServerProcess() as server:
            before_hello = Peer(server.port)
            before_hello.send(create_user("early", "Bob"))
            error = before_hello.read().error
            self.assertEqual(error.code, frame_pb2.Error.PROTOCOL_VIOLATION)
            self.assertTrue(error.fatal)
            self.assertIsNone(before_hello.read())  # Closed.
            before_hello.close()

            peer = Peer(server.port)
            peer.hello()
            peer.send_raw(struct.pack(">I", 3) + b"\xff\xff\xff")  # Not a Frame.
            error = peer.read().error
            self.assertEqual(error.code, frame_pb2.Error.MALFORMED_FRAME)
            self.assertFalse(error.fatal)
            peer.send(create_user("after-garbage", "Ann"))
            self.assertEqual(peer.read().response.status, command_pb2.CommandResponseEnvelope.OK)

            unknown = frame_pb2.Frame()
            unknown.command.id = "unknown-type"
            unknown.command.payload.type_url = "type.googleapis.com/no.Such"
            peer.send(unknown)
            self.assertEqual(peer.read().response.status, command_pb2.CommandResponseEnvelope.NOT_FOUND)

            peer.send_raw(struct.pack(">I", 4 * 1024 * 1024 + 1))
            error = peer.read().error
            self.assertEqual(error.code, frame_pb2.Error.FRAME_TOO_LARGE)
            self.assertIn("4194305", error.message)
            self.assertIsNone(peer.read())
            peer.close()

    def test_sigterm_sends_go_away_and_drains(self):
        with ServerProcess() as server:
            peer = Peer(server.port)
            peer.hello()
            peer.send(create_user("before-stop", "Eve"))
            self.assertEqual(peer.read().response.status, command_pb2.CommandResponseEnvelope.OK)
            server.proc.send_signal(signal.SIGTERM)
            frame = peer.read()
            self.assertEqual(frame.WhichOneof("kind"), "go_away")
            self.assertIsNone(peer.read())
            peer.close()
            self.assertEqual(server.proc.wait(timeout=DEADLINE_S), 0)
            self.assertIn("commands=1", server.proc.stdout.read())


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=2)
