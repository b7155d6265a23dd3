"""KServe v2 / Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), beside the HTTP
server and answered by the same Service: health, metadata, ModelInfer (raw_input_contents or typed
contents in, raw_output_contents out) and Triton's ModelStatistics. Imported only with --grpc-port:
grpcio and protobuf are optional (requirements-grpc.txt)."""

import hmac
import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message, message_factory

from . import protocol
from .protocol import RequestError

SERVICE = "inference.GRPCInferenceService"
# Enough threads to fill the largest dynamic batch and still answer health and metadata meanwhile.
WORKERS = 64

# The messages of grpc_predict_v2.proto (KServe's Open Inference Protocol) with Triton's
# ModelStatistics (grpc_service.proto): field numbers as there; tests/test_grpc.py holds them to
# tritonclient's descriptors. Built at import into a private pool, not generated *_pb2 code: no
# protobuf gencode version to pin, and no clash with another copy (tritonclient's) in the default pool.
PROTO = """
message ServerLiveRequest {}
message ServerLiveResponse { bool live = 1; }
message ServerReadyRequest {}
message ServerReadyResponse { bool ready = 1; }
message ModelReadyRequest { string name = 1; string version = 2; }
message ModelReadyResponse { bool ready = 1; }
message ServerMetadataRequest {}
message ServerMetadataResponse { string name = 1; string version = 2; repeated string extensions = 3; }
message ModelMetadataRequest { string name = 1; string version = 2; }
message ModelMetadataResponse {
  message TensorMetadata { string name = 1; string datatype = 2; repeated int64 shape = 3; }
  string name = 1; repeated string versions = 2; string platform = 3;
  repeated TensorMetadata inputs = 4; repeated TensorMetadata outputs = 5;
}
message InferParameter {
  oneof parameter_choice {
    bool bool_param = 1; int64 int64_param = 2; string string_param = 3; double double_param = 4; uint64 uint64_param = 5;
  }
}
message InferTensorContents {
  repeated bool bool_contents = 1; repeated int32 int_contents = 2; repeated int64 int64_contents = 3;
  repeated uint32 uint_contents = 4; repeated uint64 uint64_contents = 5; repeated float fp32_contents = 6;
  repeated double fp64_contents = 7; repeated bytes bytes_contents = 8;
}
message ModelInferRequest {
  message InferInputTensor {
    string name = 1; string datatype = 2; repeated int64 shape = 3;
    map<string, InferParameter> parameters = 4; InferTensorContents contents = 5;
  }
  message InferRequestedOutputTensor { string name = 1; map<string, InferParameter> parameters = 2; }
  string model_name = 1; string model_version = 2; string id = 3; map<string, InferParameter> parameters = 4;
  repeated InferInputTensor inputs = 5; repeated InferRequestedOutputTensor outputs = 6;
  repeated bytes raw_input_contents = 7;
}
message ModelInferResponse {
  message InferOutputTensor {
    string name = 1; string datatype = 2; repeated int64 shape = 3;
    map<string, InferParameter> parameters = 4; InferTensorContents contents = 5;
  }
  string model_name = 1; string model_version = 2; string id = 3; map<string, InferParameter> parameters = 4;
  repeated InferOutputTensor outputs = 5; repeated bytes raw_output_contents = 6;
}
message ModelStatisticsRequest { string name = 1; string version = 2; }
message StatisticDuration { uint64 count = 1; uint64 ns = 2; }
message InferStatistics {
  StatisticDuration success = 1; StatisticDuration fail = 2; StatisticDuration queue = 3;
  StatisticDuration compute_input = 4; StatisticDuration compute_infer = 5; StatisticDuration compute_output = 6;
  StatisticDuration cache_hit = 7; StatisticDuration cache_miss = 8;
}
message InferBatchStatistics {
  uint64 batch_size = 1; StatisticDuration compute_input = 2; StatisticDuration compute_infer = 3;
  StatisticDuration compute_output = 4;
}
message ModelStatistics {
  string name = 1; string version = 2; uint64 last_inference = 3; uint64 inference_count = 4;
  uint64 execution_count = 5; InferStatistics inference_stats = 6; repeated InferBatchStatistics batch_stats = 7;
}
message ModelStatisticsResponse { repeated ModelStatistics model_stats = 1; }
"""

_FIELD = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"bool": _FIELD.TYPE_BOOL, "string": _FIELD.TYPE_STRING, "bytes": _FIELD.TYPE_BYTES,
            "int32": _FIELD.TYPE_INT32, "int64": _FIELD.TYPE_INT64, "uint32": _FIELD.TYPE_UINT32,
            "uint64": _FIELD.TYPE_UINT64, "float": _FIELD.TYPE_FLOAT, "double": _FIELD.TYPE_DOUBLE}


def file_descriptor(text=PROTO, package="inference"):
    """A FileDescriptorProto of the proto3 subset above: messages (nested too), scalar, message,
    repeated and map fields, oneofs."""
    tokens = re.findall(r"[A-Za-z_][\w.]*|\d+|[{}<>;=,]", text)
    proto = descriptor_pb2.FileDescriptorProto(name="mdbuild_grpc_v2.proto", package=package, syntax="proto3")
    typed = []  # (field, the scope its message type's name is looked up from, that name)
    position = 0

    def take(expected=None):
        nonlocal position
        token = tokens[position]
        if expected is not None and token != expected:
            raise ValueError(f"proto text: expected {expected!r} at {token!r}")
        position += 1
        return token

    def fields_of(container, scope, oneof=None):
        while tokens[position] != "}":
            if tokens[position] == "message":
                take()
                name = take()
                take("{")
                fields_of(container.nested_type.add(name=name), f"{scope}.{name}")
            elif tokens[position] == "oneof":
                take()
                container.oneof_decl.add(name=take())
                take("{")
                fields_of(container, scope, oneof=len(container.oneof_decl) - 1)
            else:
                field_of(container, scope, oneof)
        take("}")

    def field_of(container, scope, oneof):
        label, kind = _FIELD.LABEL_OPTIONAL, take()
        if kind == "repeated":
            label, kind = _FIELD.LABEL_REPEATED, take()
        if kind == "map":  # map<K, V> name: a repeated nested <Name>Entry {K key = 1; V value = 2;}
            take("<")
            key = take()
            take(",")
            value = take()
            take(">")
            name = take()
            entry = container.nested_type.add(name="".join(part.title() for part in name.split("_")) + "Entry")
            entry.options.map_entry = True
            for index, (field_name, type_name) in enumerate((("key", key), ("value", value)), 1):
                add(entry, field_name, index, _FIELD.LABEL_OPTIONAL, type_name, f"{scope}.{entry.name}")
            label, kind = _FIELD.LABEL_REPEATED, f"{scope}.{entry.name}"
        else:
            name = take()
        take("=")
        field = add(container, name, int(take()), label, kind, scope)
        if oneof is not None:
            field.oneof_index = oneof
        take(";")

    def add(container, name, number, label, kind, scope):
        field = container.field.add(name=name, number=number, label=label)
        if kind in _SCALARS:
            field.type = _SCALARS[kind]
        else:
            field.type = _FIELD.TYPE_MESSAGE
            typed.append((field, scope, kind))
        return field

    while position < len(tokens):
        take("message")
        name = take()
        take("{")
        fields_of(proto.message_type.add(name=name), f"{package}.{name}")
    known = set(_message_names(proto.message_type, package))
    for field, scope, kind in typed:  # proto scoping: the innermost enclosing message that has the name
        parts = scope.split(".")
        candidates = [".".join(parts[:cut] + [kind]) for cut in range(len(parts), 0, -1)]
        resolved = kind if kind in known else next((c for c in candidates if c in known), None)
        if resolved is None:
            raise ValueError(f"proto text: unknown type {kind!r} in {scope}")
        field.type_name = "." + resolved
    return proto


def _message_names(messages, prefix):
    for described in messages:
        yield f"{prefix}.{described.name}"
        yield from _message_names(described.nested_type, f"{prefix}.{described.name}")


def message_classes():
    """{message name: class} of every top-level message, from a pool of their own."""
    proto = file_descriptor()
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {described.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{proto.package}.{described.name}"))
            for described in proto.message_type}


MESSAGES = message_classes()

# A RequestError's HTTP status as a gRPC status code.
CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED, 404: grpc.StatusCode.NOT_FOUND,
         413: grpc.StatusCode.RESOURCE_EXHAUSTED, 500: grpc.StatusCode.INTERNAL}

# Where typed `contents` holds each datatype's values (FP16 has no field: it travels raw only).
_CONTENTS = {"bool": "bool_contents", "int8": "int_contents", "int16": "int_contents", "int32": "int_contents",
             "int64": "int64_contents", "uint8": "uint_contents", "uint16": "uint_contents", "uint32": "uint_contents",
             "uint64": "uint64_contents", "float32": "fp32_contents", "float64": "fp64_contents"}


class Rpcs:
    """The RPCs of one Service; each call is counted in /metrics and writes one access-log line, as
    an HTTP request does."""

    def __init__(self, service, token):
        self.service = service
        self.token = token

    def handler(self):
        rpcs = {  # name: (its route in /metrics, the request type, the method, public: open without the token)
            "ServerLive": ("grpc_health", "ServerLiveRequest", lambda _: MESSAGES["ServerLiveResponse"](live=True), True),
            "ServerReady": ("grpc_health", "ServerReadyRequest", lambda _: MESSAGES["ServerReadyResponse"](ready=True), True),
            "ModelReady": ("grpc_health", "ModelReadyRequest", self.model_ready, True),
            "ServerMetadata": ("grpc_metadata", "ServerMetadataRequest", self.server_metadata, False),
            "ModelMetadata": ("grpc_metadata", "ModelMetadataRequest", self.model_metadata, False),
            "ModelStatistics": ("grpc_statistics", "ModelStatisticsRequest", self.statistics, False),
            "ModelInfer": ("grpc_infer", None, self.infer, False),  # parsed in compute_input, as an HTTP body
        }
        # No (de)serializers: each RPC sees its request's bytes (their size goes to the access log,
        # and an unreadable message is answered like a bad JSON body).
        return grpc.method_handlers_generic_handler(SERVICE, {
            name: grpc.unary_unary_rpc_method_handler(self._rpc(name, *spec)) for name, spec in rpcs.items()})

    def _rpc(self, name, route, request_type, method, public):
        """`request_type`: the message parsed before `method` runs (None: `method` takes the bytes)."""

        def handle(raw, context):
            metrics = self.service.metrics
            started = time.perf_counter()
            metrics.started()
            status, kind, reply, details = 500, None, b"", ""
            try:
                if not public:
                    self._authorize(context)
                reply = method(parse(request_type, raw) if request_type else raw)
                reply = reply if isinstance(reply, bytes) else reply.SerializeToString()
                status = 200
            except RequestError as exc:
                status, kind, details = exc.status, exc.kind, str(exc)
            except Exception as exc:  # a fault of the server or runtime, never of the request
                kind, details = "internal", f"internal error: {exc}"
            seconds = time.perf_counter() - started
            metrics.finished(route, status, seconds, kind)
            code = grpc.StatusCode.OK if status == 200 else CODES.get(status, grpc.StatusCode.UNKNOWN)
            sys.stderr.write(json.dumps({
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "client": context.peer(), "method": "gRPC",
                "path": f"/{SERVICE}/{name}", "status": status, "grpc_status": code.name, "error": kind,
                "ms": round(seconds * 1e3, 3), "bytes_in": len(raw), "bytes_out": len(reply),
            }) + "\n")
            if status != 200:
                context.abort(code, details)
            return reply

        return handle

    def _authorize(self, context):
        if not self.token:
            return
        sent = b""
        for key, value in context.invocation_metadata():
            scheme, _, credentials = (value if isinstance(value, str) else "").partition(" ")
            if key.lower() == "authorization" and scheme.lower() == "bearer":  # schemes ignore case
                sent = credentials.encode("utf-8", "replace")
        if not hmac.compare_digest(sent, self.token.encode()):
            raise RequestError("missing or wrong bearer token (Authorization: Bearer <token>)", status=401, kind="unauthorized")

    def _model(self, name, version):
        if name != self.service.name:
            raise RequestError(f"no model {name!r}; this server serves {self.service.name!r}", status=404, kind="not_found")
        if version not in ("", "1"):
            raise RequestError(f"model {name!r} has version 1 only, not {version!r}", status=404, kind="not_found")

    def model_ready(self, request):
        ready = request.name == self.service.name and request.version in ("", "1")
        return MESSAGES["ModelReadyResponse"](ready=ready)

    def server_metadata(self, _):
        return MESSAGES["ServerMetadataResponse"](name="mdbuild-serve", version=self.service.manifest["mdbuild"],
                                                  extensions=["statistics"])

    def model_metadata(self, request):
        self._model(request.name, request.version)
        return json_format.ParseDict(self.service.metadata(), MESSAGES["ModelMetadataResponse"]())

    def statistics(self, request):
        if request.name:  # Triton: no name asks for every model's
            self._model(request.name, request.version)
        # ignore_unknown_fields: the REST statistics may carry fields Triton's message lacks
        return json_format.ParseDict(self.service.statistics.render(), MESSAGES["ModelStatisticsResponse"](),
                                     ignore_unknown_fields=True)

    def infer(self, raw):
        service = self.service
        request = None

        def prepare():
            nonlocal request
            request = parse("ModelInferRequest", raw)
            self._model(request.model_name, request.model_version)
            feeds = decode_inputs(request, service.model.inputs, service.settings["allow_nonfinite"],
                                  service.manifest["requests"], service.max_rows())
            names = [output.name for output in request.outputs]
            protocol.check_outputs(names, service.model.outputs)
            return feeds, names or list(service.model.outputs)

        def answer(results, names):
            response = MESSAGES["ModelInferResponse"](model_name=service.name, model_version="1", id=request.id)
            for name in names:
                value = np.ascontiguousarray(results[name])
                response.outputs.add(name=name, datatype=protocol.V2_NAMES.get(str(value.dtype), str(value.dtype)),
                                     shape=value.shape)
                response.raw_output_contents.append(value.tobytes())
            return response.SerializeToString()

        return service.inference(prepare, answer)


def parse(request_type, raw):
    try:
        return MESSAGES[request_type].FromString(raw)
    except message.DecodeError as exc:
        raise RequestError(f"the request is not a valid {request_type}: {exc}", kind="bad_message") from None


def decode_inputs(request, model_inputs, allow_nonfinite, contract, max_rows):
    """{name: array} from a ModelInferRequest, checked as a REST request's inputs are (protocol.py)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(f"raw_input_contents holds {len(raw)} entries for {len(request.inputs)} inputs", kind="bad_input")
    feeds = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        dtype, shape = protocol.check_tensor(name, tensor.datatype, list(tensor.shape), model_inputs, feeds)
        if raw:
            if tensor.HasField("contents"):
                raise RequestError(f"input {name!r} has contents and raw_input_contents: send each input's data in "
                                   "one of them", kind="bad_input")
            array = _from_raw(name, raw[index], dtype, shape)
        else:
            array = _from_contents(name, tensor.contents, dtype, shape)
        feeds[name] = protocol.check_values(name, array, allow_nonfinite, contract)
    protocol.check_feeds(feeds, model_inputs, contract, max_rows)
    return feeds


def _from_raw(name, data, dtype, shape):
    count = int(np.prod(shape))
    expected = count * np.dtype(dtype).itemsize
    if len(data) != expected:
        raise RequestError(f"input {name!r}: raw_input_contents holds {len(data)} bytes; shape {shape} of {dtype} needs "
                           f"{expected}", kind="bad_input")
    return np.frombuffer(data, dtype=dtype, count=count).reshape(shape)


def _from_contents(name, contents, dtype, shape):
    field = _CONTENTS.get(dtype)
    if field is None:
        raise RequestError(f"input {name!r}: {protocol.V2_NAMES.get(dtype, dtype)} data travels in raw_input_contents "
                           "(contents has no field for it)", kind="bad_input")
    given = np.asarray(getattr(contents, field))
    array = given.astype(dtype)
    if array.dtype.kind in "iu" and not np.array_equal(array, given):
        raise RequestError(f"input {name!r}: contents.{field} holds a value outside "
                           f"{protocol.V2_NAMES.get(dtype, dtype)}", kind="bad_input")
    count = int(np.prod(shape))
    if array.size != count:
        raise RequestError(f"input {name!r}: {array.size} values do not fill shape {shape}", kind="bad_input")
    return array.reshape(shape)


def start(service, token, host, port):
    """A started gRPC server sharing `service` and (its bound port); a message over the body limit is
    refused with RESOURCE_EXHAUSTED before it is read."""
    limit = service.settings["max_body_bytes"]
    server = grpc.server(ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="grpc"),
                         # without SO_REUSEPORT a port in use fails to bind instead of being shared
                         options=[("grpc.max_receive_message_length", limit), ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((Rpcs(service, token).handler(),))
    bound = server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    server.start()
    return server, bound
