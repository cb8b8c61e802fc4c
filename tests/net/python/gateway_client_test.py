#!/usr/bin/env python3
"""The event gateway against an independent WebSocket client (Debian's python3-websockets),
written from proto/README.md and gateway.proto alone, with commands sent over the TCP protocol
to the same server process (cqrs_test_user_server).

    gateway_client_test.py <server binary> <dir with generated *_pb2.py>
"""

import asyncio
import base64
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import unittest

import websockets

SERVER, PB_DIR = sys.argv[1], sys.argv[2]
sys.path.insert(0, PB_DIR)

from cqrs.v1 import command_pb2, event_pb2, frame_pb2, gateway_pb2  # noqa: E402
from users.v1 import users_pb2  # noqa: E402

DEADLINE_S = 20
OK = command_pb2.CommandResponseEnvelope.OK
REJECTED = command_pb2.CommandResponseEnvelope.REJECTED


class ServerProcess:
    def __init__(self, *flags):
        self.flags = list(flags)

    def __enter__(self):
        self.proc = subprocess.Popen([SERVER] + self.flags, stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline().split()[1])
        line = self.proc.stdout.readline()
        assert line.startswith("GATEWAY "), line
        self.gateway = int(line.split()[1])
        self.url = "ws://127.0.0.1:%d/events" % self.gateway
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=DEADLINE_S)
        self.proc.stdout.close()


class Commands:
    """A blocking TCP command client (the protocol of proto/README.md)."""

    instances = 0

    def __init__(self, port):
        Commands.instances += 1
        self.prefix = "py-gw-%d-%d-" % (os.getpid(), Commands.instances)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
        self.buf = b""
        self.next_id = 0
        hello = frame_pb2.Frame()
        hello.hello.protocol_version = 1
        self._send([hello])
        assert self._read().WhichOneof("kind") == "hello_ack"

    def _send(self, frames):
        data = b""
        for frame in frames:
            body = frame.SerializeToString()
            data += struct.pack(">I", len(body)) + body
        self.sock.sendall(data)

    def _read(self):
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    frame = frame_pb2.Frame()
                    frame.ParseFromString(self.buf[4 : 4 + n])
                    self.buf = self.buf[4 + n :]
                    return frame
            chunk = self.sock.recv(1 << 20)
            assert chunk, "command server closed the connection"
            self.buf += chunk

    def create_users(self, names):
        """Sends CreateUser for every name (pipelined); returns the responses in order."""
        frames, ids = [], []
        for name in names:
            self.next_id += 1
            frame = frame_pb2.Frame()
            frame.command.id = self.prefix + str(self.next_id)
            frame.command.subject = frame.command.id
            frame.command.payload.Pack(users_pb2.CreateUser(name=name))
            frames.append(frame)
            ids.append(frame.command.id)
        self._send(frames)
        by_id = {}
        while len(by_id) < len(ids):
            response = self._read().response
            by_id[response.command_id] = response
        return [by_id[i] for i in ids]

    def create_user(self, name):
        return self.create_users([name])[0]

    def close(self):
        self.sock.close()


def subscribe_json(subscription_id, channels, from_offset=None, epoch=None):
    message = {"subscribe": {"subscriptionId": subscription_id, "channels": channels}}
    if from_offset is not None:
        message["subscribe"]["fromOffset"] = str(from_offset)
    if epoch is not None:
        message["subscribe"]["epoch"] = str(epoch)
    return json.dumps(message)


def subscribe_proto(subscription_id, channels, from_offset=None, epoch=None):
    message = gateway_pb2.ClientMessage()
    message.subscribe.subscription_id = subscription_id
    message.subscribe.channels.extend(channels)
    if from_offset is not None:
        message.subscribe.from_offset = from_offset
    if epoch is not None:
        message.subscribe.epoch = epoch
    return message.SerializeToString()


async def recv_json(ws):
    data = await asyncio.wait_for(ws.recv(), DEADLINE_S)
    assert isinstance(data, str), "JSON connections get text messages"
    return json.loads(data)


async def recv_proto(ws):
    data = await asyncio.wait_for(ws.recv(), DEADLINE_S)
    assert isinstance(data, bytes), "proto connections get binary messages"
    message = gateway_pb2.ServerMessage()
    message.ParseFromString(data)
    return message


def parse_server_frames(data):
    """(opcode, payload) of every server frame (unmasked, unfragmented) in `data`."""
    frames, at = [], 0
    while at < len(data):
        opcode, length, at = data[at] & 0x0F, data[at + 1] & 0x7F, at + 2
        if length == 126:
            length, at = struct.unpack(">H", data[at : at + 2])[0], at + 2
        elif length == 127:
            length, at = struct.unpack(">Q", data[at : at + 8])[0], at + 8
        frames.append((opcode, data[at : at + length]))
        at += length
    return frames


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 3 * DEADLINE_S))


class GatewayTest(unittest.TestCase):
    def test_seed_sequence_reaches_json_and_proto_subscribers(self):
        async def scenario(server):
            commands = Commands(server.port)
            async with websockets.connect(server.url, subprotocols=["cqrs.v1.json"]) as a, \
                    websockets.connect(server.url, subprotocols=["cqrs.v1.proto"]) as b:
                self.assertEqual(a.subprotocol, "cqrs.v1.json")
                self.assertEqual(b.subprotocol, "cqrs.v1.proto")
                await a.send(subscribe_json("A", ["users"]))
                await b.send(subscribe_proto("B", ["users"]))
                subscribed_a = (await recv_json(a))["subscribed"]
                self.assertEqual(subscribed_a["subscriptionId"], "A")
                subscribed_b = (await recv_proto(b)).subscribed
                self.assertEqual(subscribed_b.subscription_id, "B")
                self.assertEqual(int(subscribed_a["epoch"]), subscribed_b.epoch)

                response = commands.create_user("Bob")
                self.assertEqual(response.status, OK)
                offset = response.event_offsets[0]

                event_a = (await recv_json(a))["event"]
                self.assertEqual(int(event_a["offset"]), offset)
                self.assertEqual(event_a["channel"], "users")
                self.assertEqual(event_a["payload"]["@type"],
                                 "type.googleapis.com/users.v1.UserCreated")
                self.assertEqual(event_a["payload"]["name"], "Bob")

                event_b = (await recv_proto(b)).event
                self.assertEqual(event_b.offset, offset)
                created = users_pb2.UserCreated()
                self.assertTrue(event_b.payload.Unpack(created))
                self.assertEqual(created.name, "Bob")
                self.assertEqual(created.user_id, event_a["payload"]["userId"])
            commands.close()

        with ServerProcess() as server:
            run(scenario(server))

    def test_no_subprotocol_means_json_and_unknown_is_rejected(self):
        async def scenario(server):
            async with websockets.connect(server.url) as ws:
                self.assertIsNone(ws.subprotocol)
                await ws.send(json.dumps({"ping": {"nonce": "7"}}))
                self.assertEqual((await recv_json(ws))["pong"]["nonce"], "7")
            with self.assertRaises(websockets.exceptions.InvalidStatusCode) as refused:
                async with websockets.connect(server.url, subprotocols=["mqtt"]):
                    pass
            self.assertEqual(refused.exception.status_code, 400)

        with ServerProcess() as server:
            run(scenario(server))

    def test_patterns_and_failed_commands_publish_nothing(self):
        async def scenario(server):
            commands = Commands(server.port)
            responses = commands.create_users(["Ann", "", "Cid", "x" * 65, "Dee"])
            self.assertEqual([r.status for r in responses], [OK, REJECTED, OK, REJECTED, OK])
            self.assertEqual([len(r.event_offsets) for r in responses], [1, 0, 1, 0, 1])
            offsets = [r.event_offsets[0] for r in responses if r.event_offsets]
            self.assertEqual(offsets, [offsets[0], offsets[0] + 1, offsets[0] + 2])
            async with websockets.connect(server.url) as ws:
                # Replays (from offset 0) are written right after `subscribed`, before any
                # later reply, so the pong below proves what did not match.
                await ws.send(subscribe_json("star", ["*"], from_offset=0))
                await ws.send(subscribe_json("prefix", ["users.*"], from_offset=0))
                await ws.send(subscribe_json("other", ["orders", "users.eu"], from_offset=0))
                await ws.send(json.dumps({"ping": {"nonce": "1"}}))
                seen = []
                while True:
                    message = await recv_json(ws)
                    if "pong" in message:
                        break
                    if "event" in message:
                        seen.append(int(message["event"]["offset"]))
                        self.assertEqual(message["event"]["payload"]["name"],
                                         ["Ann", "Cid", "Dee"][len(seen) - 1])
                self.assertEqual(seen, offsets)  # Only "*" matched "users"; nothing else.
            commands.close()

        with ServerProcess() as server:
            run(scenario(server))

    def test_resume_after_disconnect_has_no_gap_and_no_duplicate(self):
        async def scenario(server):
            commands = Commands(server.port)
            writer = Commands(server.port)
            received = []
            async with websockets.connect(server.url, subprotocols=["cqrs.v1.proto"]) as ws:
                await ws.send(subscribe_proto("r", ["users"]))
                epoch = (await recv_proto(ws)).subscribed.epoch
                commands.create_users(["first %d" % i for i in range(20)])
                while len(received) < 20:
                    received.append((await recv_proto(ws)).event.offset)
            # Disconnected: events keep coming, and keep coming while we resume.
            commands.create_users(["meanwhile %d" % i for i in range(50)])
            loop = asyncio.get_running_loop()
            during = loop.run_in_executor(
                None, lambda: [writer.create_users(["during %d-%d" % (j, i) for i in range(20)])
                               for j in range(10)])
            async with websockets.connect(server.url, subprotocols=["cqrs.v1.proto"]) as ws:
                await ws.send(subscribe_proto("r", ["users"], from_offset=received[-1],
                                              epoch=epoch))
                self.assertEqual((await recv_proto(ws)).WhichOneof("kind"), "subscribed")
                await during
                while len(received) < 20 + 50 + 200:
                    received.append((await recv_proto(ws)).event.offset)
            self.assertEqual(received, list(range(received[0], received[0] + 270)))
            commands.close()
            writer.close()

        with ServerProcess() as server:
            run(scenario(server))

    def test_expired_offset_and_other_epoch_are_explicit_errors(self):
        async def scenario(server):
            commands = Commands(server.port)
            commands.create_users(["u%d" % i for i in range(10)])
            async with websockets.connect(server.url) as ws:
                await ws.send(subscribe_json("old", ["users"], from_offset=1))
                error = (await recv_json(ws))["error"]
                self.assertEqual(error["code"], "OFFSET_UNAVAILABLE")
                self.assertEqual(error["subscriptionId"], "old")
                self.assertEqual(int(error["earliestOffset"]), 6)  # max-events 5 of 10.
                epoch = int(error["epoch"])
                self.assertIn("earliest is 6", error["message"])

                await ws.send(subscribe_json("moved", ["users"], from_offset=8, epoch=epoch + 1))
                error = (await recv_json(ws))["error"]
                self.assertEqual(error["code"], "OFFSET_UNAVAILABLE")
                self.assertIn("epoch", error["message"])

                await ws.send(subscribe_json("ok", ["users"], from_offset=5, epoch=epoch))
                self.assertIn("subscribed", await recv_json(ws))
                replayed = [int((await recv_json(ws))["event"]["offset"]) for _ in range(5)]
                self.assertEqual(replayed, [6, 7, 8, 9, 10])
            commands.close()

        with ServerProcess("--max-events", "5") as server:
            run(scenario(server))

    def test_origin_allow_list(self):
        async def scenario(server):
            async with websockets.connect(server.url, origin="http://good.example") as ws:
                await ws.send(json.dumps({"ping": {}}))
                self.assertIn("pong", await recv_json(ws))
            async with websockets.connect(server.url) as ws:  # Native: no Origin header.
                await ws.send(json.dumps({"ping": {}}))
                self.assertIn("pong", await recv_json(ws))
            with self.assertRaises(websockets.exceptions.InvalidStatusCode) as refused:
                async with websockets.connect(server.url, origin="http://evil.example"):
                    pass
            self.assertEqual(refused.exception.status_code, 403)

        with ServerProcess("--allowed-origin", "http://good.example") as server:
            run(scenario(server))

    def test_malformed_messages_get_errors_and_the_connection_survives(self):
        async def scenario(server):
            async with websockets.connect(server.url) as ws:
                await ws.send("{not json")
                error = (await recv_json(ws))["error"]
                self.assertEqual(error["code"], "MALFORMED_MESSAGE")
                await ws.send("{}")
                self.assertIn("none of", (await recv_json(ws))["error"]["message"])
                await ws.send(b"\x0a\x00")  # Binary on a JSON connection.
                self.assertEqual((await recv_json(ws))["error"]["code"], "MALFORMED_MESSAGE")
                await ws.send(subscribe_json("s", []))
                self.assertEqual((await recv_json(ws))["error"]["code"], "INVALID_SUBSCRIPTION")
                await ws.send(subscribe_json("s", ["us*ers"]))
                error = (await recv_json(ws))["error"]
                self.assertEqual(error["code"], "INVALID_SUBSCRIPTION")
                self.assertIn("us*ers", error["message"])
                await ws.send(json.dumps({"unsubscribe": {"subscriptionId": "nope"}}))
                self.assertEqual((await recv_json(ws))["error"]["code"], "UNKNOWN_SUBSCRIPTION")
                await ws.send(subscribe_json("s", ["users"]))
                self.assertIn("subscribed", await recv_json(ws))
                await ws.send(json.dumps({"unsubscribe": {"subscriptionId": "s"}}))
                self.assertEqual((await recv_json(ws))["unsubscribed"]["subscriptionId"], "s")

        with ServerProcess() as server:
            run(scenario(server))

    def test_oversize_message_closes_with_1009(self):
        async def scenario(server):
            async with websockets.connect(server.url) as ws:
                await ws.send(json.dumps({"ping": {"nonce": "1"}, "pad": "x" * 2000}))
                with self.assertRaises(websockets.exceptions.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), DEADLINE_S)
                self.assertEqual(closed.exception.rcvd.code, 1009)
                self.assertIn("1024", closed.exception.rcvd.reason)

        with ServerProcess("--max-message-bytes", "1024") as server:
            run(scenario(server))

    def test_slow_consumer_is_closed_and_healthy_one_gets_everything(self):
        count = 30000

        async def scenario(server):
            # A subscriber that never reads: a raw socket with a tiny receive buffer.
            stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.settimeout(DEADLINE_S)
            stalled.connect(("127.0.0.1", server.gateway))
            key = base64.b64encode(os.urandom(16)).decode()
            stalled.sendall(("GET /events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                             "Sec-WebSocket-Version: 13\r\n\r\n" % key).encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += stalled.recv(1)
            self.assertIn(b" 101 ", head)
            payload = subscribe_json("slow", ["users"]).encode()
            mask = os.urandom(4)
            stalled.sendall(bytes([0x81, 0x80 | len(payload)]) + mask +
                            bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

            commands = Commands(server.port)
            async with websockets.connect(server.url, subprotocols=["cqrs.v1.proto"],
                                          max_queue=None) as healthy:
                await healthy.send(subscribe_proto("ok", ["users"]))
                self.assertEqual((await recv_proto(healthy)).WhichOneof("kind"), "subscribed")
                loop = asyncio.get_running_loop()
                sending = loop.run_in_executor(
                    None, lambda: [commands.create_users(["slow %d" % i for i in range(500)])
                                   for _ in range(count // 500)])
                offsets = []
                while len(offsets) < count:
                    offsets.append((await recv_proto(healthy)).event.offset)
                await sending
                self.assertEqual(offsets, list(range(offsets[0], offsets[0] + count)))

            # Now read what the stalled one was sent: some events, then a 1013 close.
            data = b""
            while True:
                chunk = stalled.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
            frames = parse_server_frames(data)
            self.assertEqual(frames[0][0], 0x1)  # Subscribed, as text.
            self.assertIn("subscribed", json.loads(frames[0][1]))
            self.assertTrue(all(opcode == 0x1 for opcode, _ in frames[1:-1]))
            opcode, close = frames[-1]
            self.assertEqual(opcode, 0x8, "the last frame is a close")
            code = struct.unpack(">H", close[:2])[0]
            reason = close[2:].decode()
            self.assertEqual(code, 1013)
            self.assertIn("max_queue_bytes=65536", reason)
            stalled.close()
            commands.close()

        with ServerProcess("--max-queue-bytes", "65536", "--write-timeout-ms", "60000") as server:
            run(scenario(server))

    def test_http_healthz_404_and_426(self):
        with ServerProcess() as server:
            conn = http.client.HTTPConnection("127.0.0.1", server.gateway, timeout=DEADLINE_S)
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            self.assertEqual(response.status, 200)
            health = json.loads(response.read())
            self.assertEqual(health["status"], "ok")
            conn.request("GET", "/nope")
            response = conn.getresponse()
            self.assertEqual(response.status, 404)
            self.assertIn(b"/nope", response.read())
            conn.request("GET", "/events")
            response = conn.getresponse()
            self.assertEqual(response.status, 426)
            response.read()
            conn.request("GET", "/healthz", headers={"Origin": "http://evil.example"})
            self.assertEqual(conn.getresponse().status, 403)
            conn.close()

    def test_shutdown_closes_subscribers_with_1001(self):
        async def scenario(server):
            async with websockets.connect(server.url) as ws:
                await ws.send(subscribe_json("s", ["users"]))
                self.assertIn("subscribed", await recv_json(ws))
                server.proc.send_signal(signal.SIGTERM)
                with self.assertRaises(websockets.exceptions.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), DEADLINE_S)
                self.assertEqual(closed.exception.rcvd.code, 1001)

        with ServerProcess() as server:
            run(scenario(server))
            self.assertEqual(server.proc.wait(timeout=DEADLINE_S), 0)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=2)
