"""Salesforce Pub/Sub API: the gRPC service ``eventbus.v1.PubSub`` with Avro-encoded events.

Change Data Capture events reach subscribers through Pub/Sub API (Pub/Sub API Developer
Guide): a bidirectional ``Subscribe`` stream of ``FetchRequest`` / ``FetchResponse``, where
the client asks for ``num_requested`` events at a time and asks again once they arrived;
``GetTopic`` says whether the caller may subscribe and which schema the topic uses;
``GetSchema`` returns that Avro schema as JSON. Every call carries the metadata headers
``accesstoken``, ``instanceurl`` and ``tenantid`` (the org id) (Pub/Sub API, "Include
Authorization Headers in RPC Method Calls").

The messages are those of the published ``pubsub_api.proto`` (package ``eventbus.v1``),
declared here field by field with the same names, numbers and types, for the three calls
used; protobuf builds the message classes from these declarations at import, so no
generated code is needed. Event payloads are decoded with fastavro against the schema the
API returns.

In a gevent-patched process (the load generator) gRPC is switched to gevent's event loop
before the first channel is made (``grpc.experimental.gevent.init_gevent``), so that a
subscription waiting for events does not block the other greenlets.
"""

from __future__ import annotations

import io
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fastavro
import grpc  # type: ignore[import-untyped]
from google.protobuf import (  # type: ignore[import-untyped]
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)

from bench.adapters.saas.http import Secret

PACKAGE = "eventbus.v1"
SERVICE = f"{PACKAGE}.PubSub"
# The global endpoint (Pub/Sub API Developer Guide, "Pub/Sub API Endpoint").
DEFAULT_ENDPOINT = "api.pubsub.salesforce.com:7443"
# Events asked for at a time; the API delivers at most 100 per FetchRequest.
BATCH = 100
# How long a unary call (GetTopic, GetSchema) may take.
CALL_TIMEOUT_S = 30.0

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _BYTES, _BOOL, _INT32 = _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_BOOL, _F.TYPE_INT32
_ENUM, _MESSAGE = _F.TYPE_ENUM, _F.TYPE_MESSAGE
_REPEATED = "repeated"

# name -> fields (name, number, type, type name, "repeated" or ""), as in pubsub_api.proto.
MESSAGES: dict[str, tuple[tuple[str, int, int, str, str], ...]] = {
    "TopicRequest": (("topic_name", 1, _STRING, "", ""),),
    "TopicInfo": (("topic_name", 1, _STRING, "", ""), ("tenant_guid", 2, _STRING, "", ""),
                  ("can_publish", 3, _BOOL, "", ""), ("can_subscribe", 4, _BOOL, "", ""),
                  ("schema_id", 5, _STRING, "", ""), ("rpc_id", 6, _STRING, "", "")),
    "SchemaRequest": (("schema_id", 1, _STRING, "", ""),),
    "SchemaInfo": (("schema_json", 1, _STRING, "", ""), ("schema_id", 2, _STRING, "", ""),
                   ("rpc_id", 3, _STRING, "", "")),
    "EventHeader": (("key", 1, _STRING, "", ""), ("value", 2, _BYTES, "", "")),
    "ProducerEvent": (("id", 1, _STRING, "", ""), ("schema_id", 2, _STRING, "", ""),
                      ("payload", 3, _BYTES, "", ""),
                      ("headers", 4, _MESSAGE, "EventHeader", _REPEATED)),
    "ConsumerEvent": (("event", 1, _MESSAGE, "ProducerEvent", ""),
                      ("replay_id", 2, _BYTES, "", "")),
    "FetchRequest": (("topic_name", 1, _STRING, "", ""),
                     ("replay_preset", 2, _ENUM, "ReplayPreset", ""),
                     ("replay_id", 3, _BYTES, "", ""), ("num_requested", 4, _INT32, "", ""),
                     ("auth_refresh", 5, _STRING, "", "")),
    "FetchResponse": (("events", 1, _MESSAGE, "ConsumerEvent", _REPEATED),
                      ("latest_replay_id", 2, _BYTES, "", ""), ("rpc_id", 3, _STRING, "", ""),
                      ("pending_num_requested", 4, _INT32, "", "")),
}
REPLAY_PRESETS = {"LATEST": 0, "EARLIEST": 1, "CUSTOM": 2}
# rpc name -> (request, response, streaming)
METHODS = {"Subscribe": ("FetchRequest", "FetchResponse", True),
           "GetSchema": ("SchemaRequest", "SchemaInfo", False),
           "GetTopic": ("TopicRequest", "TopicInfo", False)}


def _file_descriptor() -> Any:
    proto = descriptor_pb2.FileDescriptorProto(
        name="crmbench/eventbus_v1_pubsub.proto", package=PACKAGE, syntax="proto3")
    enum = proto.enum_type.add(name="ReplayPreset")
    for name, number in REPLAY_PRESETS.items():
        enum.value.add(name=name, number=number)
    for name, fields in MESSAGES.items():
        msg = proto.message_type.add(name=name)
        for fname, number, ftype, type_name, label in fields:
            field = msg.field.add(name=fname, number=number, type=ftype,
                                  label=_F.LABEL_REPEATED if label else _F.LABEL_OPTIONAL)
            if type_name:
                field.type_name = f".{PACKAGE}.{type_name}"
    service = proto.service.add(name="PubSub")
    for rpc, (request, response, streaming) in METHODS.items():
        service.method.add(name=rpc, input_type=f".{PACKAGE}.{request}",
                           output_type=f".{PACKAGE}.{response}",
                           client_streaming=streaming, server_streaming=streaming)
    return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())


def message(name: str) -> Any:
    """The message class ``eventbus.v1.<name>``."""
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


def method_path(rpc: str) -> str:
    """The gRPC path of a PubSub method, e.g. ``/eventbus.v1.PubSub/Subscribe``."""
    return f"/{SERVICE}/{rpc}"


def _serializer(msg: Any) -> bytes:
    return bytes(msg.SerializeToString())


def _deserializer(name: str) -> Callable[[bytes], Any]:
    cls = message(name)
    return lambda raw: cls.FromString(raw)


_GEVENT_LOCK = threading.Lock()
_GEVENT_DONE = False


def cooperate_with_gevent() -> None:
    """Run gRPC on gevent's loop when the process is monkey-patched (once, before channels)."""
    global _GEVENT_DONE
    with _GEVENT_LOCK:
        if _GEVENT_DONE:
            return
        _GEVENT_DONE = True
        try:
            from gevent import monkey
        except ImportError:  # pragma: no cover - gevent is a dependency of locust
            return
        if monkey.is_module_patched("socket"):
            from grpc.experimental import gevent as grpc_gevent  # type: ignore[import-untyped]

            grpc_gevent.init_gevent()


@dataclass(frozen=True)
class PubSubAuth:
    """The three metadata headers every call carries."""

    access_token: Secret
    instance_url: str
    tenant_id: str

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("accesstoken", self.access_token.reveal()),
                ("instanceurl", self.instance_url), ("tenantid", self.tenant_id))


@dataclass(frozen=True)
class ReceivedEvent:
    """One event as received: its replay id, schema, decoded payload and arrival stamp."""

    replay_id: bytes
    schema_id: str
    payload: dict[str, Any]
    received_ns: int


class PubSubError(Exception):
    """A Pub/Sub API call failed; ``code`` is the gRPC status name (e.g. UNAUTHENTICATED)."""

    def __init__(self, what: str, code: str, detail: str) -> None:
        super().__init__(f"Pub/Sub API {what} failed: {code} {detail}".strip())
        self.code = code


def _error(what: str, exc: Any) -> PubSubError:
    code = exc.code().name if callable(getattr(exc, "code", None)) else "UNKNOWN"
    detail = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    return PubSubError(what, str(code), str(detail or "")[:300])


class PubSubClient:
    """A channel to Pub/Sub API; ``auth`` is asked for the headers before every call."""

    def __init__(self, endpoint: str, auth: Callable[[], PubSubAuth], *,
                 secure: bool = True, batch: int = BATCH) -> None:
        cooperate_with_gevent()
        self.endpoint = endpoint
        self._auth = auth
        self.batch = batch
        self._channel = (grpc.secure_channel(endpoint, grpc.ssl_channel_credentials())
                         if secure else grpc.insecure_channel(endpoint))
        self._calls = {rpc: (self._channel.stream_stream if streaming
                             else self._channel.unary_unary)(
            method_path(rpc), request_serializer=_serializer,
            response_deserializer=_deserializer(response))
            for rpc, (_req, response, streaming) in METHODS.items()}
        self._schemas: dict[str, Any] = {}

    def close(self) -> None:
        self._channel.close()

    def topic(self, topic_name: str) -> dict[str, Any]:
        """GetTopic: ``{"topic_name", "can_subscribe", "schema_id", ...}``."""
        try:
            info = self._calls["GetTopic"](message("TopicRequest")(topic_name=topic_name),
                                           metadata=self._auth().metadata(),
                                           timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise _error(f"GetTopic {topic_name}", exc) from None
        return {name: getattr(info, name) for name, *_ in MESSAGES["TopicInfo"]}

    def schema(self, schema_id: str) -> Any:
        """GetSchema: the parsed Avro schema (kept per id: a schema id never changes)."""
        if schema_id not in self._schemas:
            try:
                info = self._calls["GetSchema"](message("SchemaRequest")(schema_id=schema_id),
                                                metadata=self._auth().metadata(),
                                                timeout=CALL_TIMEOUT_S)
            except grpc.RpcError as exc:
                raise _error(f"GetSchema {schema_id}", exc) from None
            self._schemas[schema_id] = fastavro.parse_schema(json.loads(info.schema_json))
        return self._schemas[schema_id]

    def decode(self, schema_id: str, payload: bytes) -> dict[str, Any]:
        record = fastavro.schemaless_reader(io.BytesIO(payload), self.schema(schema_id))
        if not isinstance(record, dict):
            raise PubSubError("decoding", "INVALID_PAYLOAD", f"schema {schema_id}")
        return record

    def subscribe(self, topic_name: str, replay_id: bytes | None = None
                  ) -> Iterator[ReceivedEvent]:
        """Events of a topic, from now (or after ``replay_id``), until the caller stops.

        Each event is stamped with ``time.perf_counter_ns`` when its FetchResponse arrived;
        another ``batch`` events are asked for once the previous ones were delivered.
        """
        requests: queue.Queue[Any] = queue.Queue()
        fetch = message("FetchRequest")
        first = (fetch(topic_name=topic_name, replay_preset=REPLAY_PRESETS["CUSTOM"],
                       replay_id=replay_id, num_requested=self.batch)
                 if replay_id else
                 fetch(topic_name=topic_name, replay_preset=REPLAY_PRESETS["LATEST"],
                       num_requested=self.batch))
        requests.put(first)

        def outgoing() -> Iterator[Any]:
            while True:
                item = requests.get()
                if item is None:
                    return
                yield item

        stream = self._calls["Subscribe"](outgoing(), metadata=self._auth().metadata())
        try:
            for response in stream:
                received = time.perf_counter_ns()
                for event in response.events:
                    schema_id = str(event.event.schema_id)
                    yield ReceivedEvent(bytes(event.replay_id), schema_id,
                                        self.decode(schema_id, bytes(event.event.payload)),
                                        received)
                if response.pending_num_requested <= 0:
                    requests.put(fetch(topic_name=topic_name, num_requested=self.batch))
        except grpc.RpcError as exc:
            raise _error(f"Subscribe {topic_name}", exc) from None
        finally:
            requests.put(None)
            stream.cancel()
