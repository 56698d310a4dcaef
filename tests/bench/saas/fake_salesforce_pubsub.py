"""A real gRPC server implementing Salesforce's Pub/Sub API service on localhost.

It serves ``eventbus.v1.PubSub`` (GetTopic, GetSchema, Subscribe) as the Pub/Sub API
Developer Guide describes it: every call must carry the ``accesstoken``, ``instanceurl``
and ``tenantid`` metadata of a valid session (else UNAUTHENTICATED); Subscribe delivers at
most the number of events the client asked for, and waits for the next FetchRequest once
that credit is spent; events are Avro-encoded with the topic's schema, which GetSchema
returns as JSON; a FetchRequest with ``replay_preset`` CUSTOM resumes after its replay id.
"""

from __future__ import annotations

import io
import itertools
import json
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fastavro
import grpc

from bench.adapters.saas.salesforce_pubsub import METHODS, REPLAY_PRESETS, SERVICE, message

SCHEMA_ID = "fakeAccountChangeEventSchema01"
ACCOUNT_CHANGE_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "AccountChangeEvent", "namespace": "com.sforce.eventbus",
    "fields": [
        {"name": "ChangeEventHeader", "type": {
            "type": "record", "name": "ChangeEventHeader", "fields": [
                {"name": "entityName", "type": "string"},
                {"name": "recordIds", "type": {"type": "array", "items": "string"}},
                {"name": "changeType", "type": {"type": "enum", "name": "ChangeType",
                                                "symbols": ["CREATE", "UPDATE", "DELETE",
                                                            "UNDELETE"]}},
                {"name": "commitTimestamp", "type": "long"},
                {"name": "changedFields", "type": {"type": "array", "items": "string"}},
            ]}},
        {"name": "Name", "type": ["null", "string"], "default": None},
        {"name": "Description", "type": ["null", "string"], "default": None},
        {"name": "NumberOfEmployees", "type": ["null", "int"], "default": None},
    ],
}
TOPICS = {"/data/AccountChangeEvent": SCHEMA_ID}


class FakePubSub:
    """The service; ``publish`` puts an event on a topic for every subscriber."""

    def __init__(self, valid: Callable[[str], bool], instance_url: str, tenant_id: str) -> None:
        self._valid, self._instance, self._tenant = valid, instance_url, tenant_id
        self._schema = fastavro.parse_schema(ACCOUNT_CHANGE_SCHEMA)
        self._lock = threading.Lock()
        self._replay = itertools.count(1)
        self.history: list[tuple[str, bytes, bytes]] = []  # topic, replay id, payload
        self._subscribers: list[tuple[str, queue.Queue[tuple[bytes, bytes]]]] = []
        self.fetch_requests: list[Any] = []
        self.subscribed = threading.Event()
        self.server = grpc.server(ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers((self._handler(),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> FakePubSub:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(grace=None)

    def _handler(self) -> Any:
        handlers = {
            "GetTopic": grpc.unary_unary_rpc_method_handler(
                self.get_topic, request_deserializer=message("TopicRequest").FromString,
                response_serializer=lambda m: m.SerializeToString()),
            "GetSchema": grpc.unary_unary_rpc_method_handler(
                self.get_schema, request_deserializer=message("SchemaRequest").FromString,
                response_serializer=lambda m: m.SerializeToString()),
            "Subscribe": grpc.stream_stream_rpc_method_handler(
                self.subscribe, request_deserializer=message("FetchRequest").FromString,
                response_serializer=lambda m: m.SerializeToString()),
        }
        assert set(handlers) == set(METHODS)
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _authorize(self, context: Any) -> None:
        meta = dict(context.invocation_metadata())
        if not (self._valid(meta.get("accesstoken", ""))
                and meta.get("instanceurl") == self._instance
                and meta.get("tenantid") == self._tenant):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid session or org headers")

    def get_topic(self, request: Any, context: Any) -> Any:
        self._authorize(context)
        if request.topic_name not in TOPICS:
            context.abort(grpc.StatusCode.NOT_FOUND, f"topic {request.topic_name} not found")
        return message("TopicInfo")(topic_name=request.topic_name, tenant_guid=self._tenant,
                                    can_subscribe=True, can_publish=False,
                                    schema_id=TOPICS[request.topic_name], rpc_id="rpc-1")

    def get_schema(self, request: Any, context: Any) -> Any:
        self._authorize(context)
        if request.schema_id != SCHEMA_ID:
            context.abort(grpc.StatusCode.NOT_FOUND, "schema not found")
        return message("SchemaInfo")(schema_json=json.dumps(ACCOUNT_CHANGE_SCHEMA),
                                     schema_id=SCHEMA_ID, rpc_id="rpc-2")

    def publish(self, topic: str, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self._schema, record)
        with self._lock:
            replay = next(self._replay).to_bytes(8, "big")
            self.history.append((topic, replay, buf.getvalue()))
            for wanted, q in self._subscribers:
                if wanted == topic:
                    q.put((replay, buf.getvalue()))
        return replay

    def subscribe(self, requests: Iterator[Any], context: Any) -> Iterator[Any]:
        self._authorize(context)
        first = next(requests)
        self.fetch_requests.append(first)
        topic = first.topic_name
        credit = [first.num_requested]
        more = threading.Condition()
        events: queue.Queue[tuple[bytes, bytes]] = queue.Queue()
        with self._lock:
            if first.replay_preset == REPLAY_PRESETS["CUSTOM"]:
                start = first.replay_id
                for t, replay, payload in self.history:
                    if t == topic and replay > start:
                        events.put((replay, payload))
            self._subscribers.append((topic, events))
        self.subscribed.set()

        def read_requests() -> None:
            try:
                for request in requests:
                    self.fetch_requests.append(request)
                    with more:
                        credit[0] += request.num_requested
                        more.notify_all()
            except Exception:  # the client cancelled: the stream is over
                return

        threading.Thread(target=read_requests, daemon=True).start()
        try:
            while context.is_active():
                with more:
                    while credit[0] <= 0 and context.is_active():
                        more.wait(0.05)
                try:
                    replay, payload = events.get(timeout=0.05)
                except queue.Empty:
                    continue
                with more:
                    credit[0] -= 1
                    pending = credit[0]
                yield self._response(replay, payload, pending)
        finally:
            with self._lock:
                self._subscribers.remove((topic, events))

    @staticmethod
    def _response(replay: bytes, payload: bytes, pending: int) -> Any:
        event = message("ConsumerEvent")(
            event=message("ProducerEvent")(id="e-" + replay.hex(), schema_id=SCHEMA_ID,
                                           payload=payload),
            replay_id=replay)
        return message("FetchResponse")(events=[event], latest_replay_id=replay,
                                        rpc_id="rpc-3", pending_num_requested=pending)


def account_change(record_id: str, changed: dict[str, Any], commit_ms: int) -> dict[str, Any]:
    """An AccountChangeEvent of an update: the changed fields set, the others null."""
    return {"ChangeEventHeader": {"entityName": "Account", "recordIds": [record_id],
                                  "changeType": "UPDATE", "commitTimestamp": commit_ms,
                                  "changedFields": sorted(changed)},
            **{k: changed.get(k) for k in ("Name", "Description", "NumberOfEmployees")}}
