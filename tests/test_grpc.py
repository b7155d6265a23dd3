"""serve.py --grpc-port: KServe v2 over gRPC beside HTTP, started for real and queried with
tritonclient.grpc; answers, errors, statistics and metrics are the HTTP server's own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import hiding
from test_serving import Served, _build_heads, binary_request, feeds_for, in_process

pytestmark = pytest.mark.onnxruntime
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TOKEN = "s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
LIMIT = 20_000  # bytes: 7 rows of the inputs are over it, 3 well within


class GrpcServed(Served):
    """serve.py with --grpc-port 0: the HTTP side as in test_serving, and the gRPC address."""

    def __init__(self, artifact: Path, *args: str):
        self.artifact = artifact
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, "-I", str(artifact / "serve.py"), "--port", "0", "--grpc-port", "0",
                                      *args], cwd=artifact, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        assert " · gRPC on 127.0.0.1:" in line, line + self.access_log()
        self.port = int(line.split("127.0.0.1:")[1].split("/")[0])
        self.url = f"127.0.0.1:{self.port}"
        self.grpc_url = line.split(" · gRPC on ", 1)[1].split()[0]

    def client(self):
        import tritonclient.grpc as triton

        return triton.InferenceServerClient(self.grpc_url)


@pytest.fixture(scope="module")
def heads(tmp_path_factory, two_heads_onnx):
    return _build_heads(tmp_path_factory, two_heads_onnx, "serving.max_batch_size=8")


@pytest.fixture(scope="module")
def server(heads):
    served = GrpcServed(heads, "--token", TOKEN, "--max-batch-size", "8", "--max-queue-delay-ms", "50",
                        "--max-body-bytes", str(LIMIT))
    yield served
    served.stop()


def grpc_inputs(feeds: dict, datatype: str = "FP32"):
    import tritonclient.grpc as triton

    inputs = []
    for name, value in feeds.items():
        tensor = triton.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def http_infer(served: Served, feeds: dict, datatype: str = "FP32", binary: bool = False):
    """(status, answer) of the HTTP route for the same tensors: JSON, or FP32 binary tensors."""
    if binary:
        body, headers = binary_request(feeds)
    else:
        body, headers = json.dumps({"inputs": [{"name": n, "shape": list(v.shape), "datatype": datatype,
                                                "data": v.ravel().tolist()} for n, v in feeds.items()]}).encode(), {}
    status, _, data = served.request("POST", "/v2/models/heads/infer", body, {**headers, "Authorization": f"Bearer {TOKEN}"})
    return status, json.loads(data)


def refused(call):
    """(the gRPC status, its message) of a call that must fail."""
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value.status(), caught.value.message()


def test_answers_equal_http_and_the_verification_outputs(server, heads):
    import tritonclient.grpc as triton

    client = server.client()
    samples = np.load(heads / "samples.npz")
    feeds = {name: samples[f"1/input/{name}"] for name in ("image", "extra")}
    result = client.infer("heads", grpc_inputs(feeds), request_id="g1", headers=AUTH)
    assert result.get_response().id == "g1" and result.get_response().model_name == "heads"
    status, answer = http_infer(server, feeds, binary=True)
    assert status == 200
    for output in answer["outputs"]:
        np.testing.assert_array_equal(result.as_numpy(output["name"]),
                                      np.asarray(output["data"], np.float32).reshape(output["shape"]))
        np.testing.assert_allclose(result.as_numpy(output["name"]), samples[f"1/artifact/{output['name']}"],
                                   rtol=1e-5, atol=1e-6)
    only = client.infer("heads", grpc_inputs(feeds_for(3)), outputs=[triton.InferRequestedOutput("embedding")],
                        headers=AUTH)
    assert only.as_numpy("score") is None and only.as_numpy("embedding").shape == (3, 6)
    assert [o.name for o in only.get_response().outputs] == ["embedding"]


def test_typed_contents_answer_as_raw_contents_do(server, heads):
    """tritonclient sends raw_input_contents; a client may send typed `contents` instead."""
    import grpc

    from builder.serving.grpc_v2 import MESSAGES

    feeds = feeds_for(2, seed=3)
    request = MESSAGES["ModelInferRequest"](model_name="heads")
    for name, value in feeds.items():
        tensor = request.inputs.add(name=name, datatype="FP32", shape=value.shape)
        tensor.contents.fp32_contents.extend(value.ravel().tolist())
    with grpc.insecure_channel(server.grpc_url) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                    request_serializer=lambda m: m.SerializeToString(),
                                    response_deserializer=MESSAGES["ModelInferResponse"].FromString)
        response = infer(request, metadata=tuple(AUTH.items()))
    expected = in_process(heads, feeds)
    for output, raw in zip(response.outputs, response.raw_output_contents):
        np.testing.assert_array_equal(np.frombuffer(raw, np.float32).reshape(list(output.shape)), expected[output.name])


def test_health_metadata_and_the_token(server):
    client = server.client()
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("heads")  # no token
    assert not client.is_model_ready("other")
    message = "missing or wrong bearer token (Authorization: Bearer <token>)"
    assert refused(lambda: client.get_model_metadata("heads")) == ("StatusCode.UNAUTHENTICATED", message)
    assert refused(lambda: client.get_model_metadata("heads", headers={"authorization": "Bearer wrong"}))[0] \
        == "StatusCode.UNAUTHENTICATED"
    meta = client.get_model_metadata("heads", headers=AUTH, as_json=True)
    assert meta["name"] == "heads" and meta["platform"] == "onnxruntime" and meta["versions"] == ["1"]
    assert {"name": "image", "datatype": "FP32", "shape": ["-1", "3", "16", "16"]} in meta["inputs"]
    assert "statistics" in client.get_server_metadata(headers=AUTH).extensions
    assert refused(lambda: client.get_model_metadata("other", headers=AUTH))[0] == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize("case", ["datatype", "shape", "missing", "unknown", "nan"])
def test_bad_inputs_get_invalid_argument_with_the_http_message(server, case):
    image, extra = np.zeros((1, 3, 16, 16), np.float32), np.zeros((1, 4), np.float32)
    feeds, datatype = {"image": image, "extra": extra}, "FP32"
    if case == "datatype":
        feeds, datatype = {"extra": extra.astype(np.int64)}, "INT64"
    elif case == "shape":
        feeds = {"image": image, "extra": np.zeros((1, 5), np.float32)}
    elif case == "missing":
        feeds = {"extra": extra}
    elif case == "unknown":
        feeds = {"img": extra}
    else:
        feeds["extra"] = np.array([[0, np.nan, 0, 0]], np.float32)
    status, answer = http_infer(server, feeds, datatype)
    assert status == 400
    code, message = refused(lambda: server.client().infer("heads", grpc_inputs(feeds, datatype), headers=AUTH))
    assert (code, message) == ("StatusCode.INVALID_ARGUMENT", answer["error"])


def test_a_message_over_the_body_limit_is_resource_exhausted(server):
    code, message = refused(lambda: server.client().infer("heads", grpc_inputs(feeds_for(7)), headers=AUTH))
    assert code == "StatusCode.RESOURCE_EXHAUSTED" and str(LIMIT) in message
    assert server.client().is_server_live()


def test_statistics_and_metrics_count_grpc_requests_and_batches(server, heads):
    client = server.client()
    refused(lambda: client.infer("heads", grpc_inputs({"extra": np.zeros((1, 4), np.float32)}), headers=AUTH))
    refused(lambda: client.get_server_metadata())
    assert client.is_server_live()
    before = client.get_inference_statistics("heads", headers=AUTH).model_stats[0]
    requests = [feeds_for(1, seed) for seed in range(8)]
    answers = [None] * 8

    def send(index):
        answers[index] = client.infer("heads", grpc_inputs(requests[index]), headers=AUTH)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for feeds, answer in zip(requests, answers):
        np.testing.assert_allclose(answer.as_numpy("score"), in_process(heads, feeds)["score"], rtol=1e-5, atol=1e-6)
    after = client.get_inference_statistics("heads", headers=AUTH).model_stats[0]
    success = after.inference_stats.success.count - before.inference_stats.success.count
    infer_ns = after.inference_stats.compute_infer.ns - before.inference_stats.compute_infer.ns
    assert success == 8 and infer_ns > 0
    assert after.execution_count - before.execution_count < 8, "the 8 concurrent requests must have shared executions"
    assert any(b.batch_size > 1 for b in after.batch_stats)
    # The same statistics as the HTTP extension's (uint64s are strings in protobuf's JSON).
    http = json.loads(server.request("GET", "/v2/models/heads/stats", headers={"Authorization": f"Bearer {TOKEN}"})[2])
    grpc_json = client.get_inference_statistics("heads", headers=AUTH, as_json=True)
    assert grpc_json["model_stats"][0]["inference_count"] == str(http["model_stats"][0]["inference_count"])
    text = server.metrics({"Authorization": f"Bearer {TOKEN}"})
    counts = {line.split("route=\"")[1].split('"')[0] + line.split("code=\"")[1].split('"')[0]: int(line.split()[-1])
              for line in text.splitlines() if line.startswith("mdbuild_requests_total")}
    assert counts["grpc_infer200"] >= 8 and counts["grpc_statistics200"] >= 2 and counts["grpc_infer400"] >= 1
    assert counts["grpc_health200"] >= 1 and counts["grpc_metadata401"] >= 1
    log = [json.loads(line) for line in server.access_log().splitlines() if line.startswith("{")]
    infers = [entry for entry in log if entry["path"] == "/inference.GRPCInferenceService/ModelInfer"]
    assert infers and all(entry["method"] == "gRPC" and entry["bytes_in"] > 0 for entry in infers)
    assert {(entry["status"], entry["grpc_status"]) for entry in infers} >= {(200, "OK"), (400, "INVALID_ARGUMENT")}


def test_sigterm_finishes_a_grpc_call_in_flight_and_exits_0(heads):
    served = GrpcServed(heads, "--max-batch-size", "8", "--max-queue-delay-ms", "500")
    client, answers = served.client(), []
    sender = threading.Thread(target=lambda: answers.append(client.infer("heads", grpc_inputs(feeds_for(1)))))
    sender.start()
    time.sleep(0.2)  # the call waits for its batch to fill
    served.proc.send_signal(signal.SIGTERM)
    sender.join(timeout=20)
    assert answers and answers[0].as_numpy("score").shape[0] == 1
    assert served.proc.wait(timeout=20) == 0


def test_without_grpcio_the_flag_is_refused_in_one_line(heads, tmp_path):
    proc = subprocess.run([sys.executable, str(heads / "serve.py"), "--port", "0", "--grpc-port", "0"], cwd=heads,
                          capture_output=True, text=True, timeout=60, env={**os.environ, **hiding(tmp_path / "hide", "grpc")})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("--grpc-port needs grpcio and protobuf: pip install -r requirements-grpc.txt")
    assert len(proc.stderr.strip().splitlines()) == 1
    pins = (heads / "requirements-grpc.txt").read_text().split()
    assert [pin.split("==")[0] for pin in pins] == ["grpcio", "protobuf"] and all("==" in pin for pin in pins)


def test_message_types_keep_tritons_field_numbers():
    """Every message (and nested message) defined here matches tritonclient's grpc_service.proto."""
    from google.protobuf import descriptor_pb2
    from tritonclient.grpc import service_pb2

    from builder.serving.grpc_v2 import MESSAGES, file_descriptor

    theirs = descriptor_pb2.FileDescriptorProto()
    service_pb2.DESCRIPTOR.CopyToProto(theirs)

    def compare(mine, their, path):
        their_fields = {field.name: field for field in their.field}
        for field in mine.field:
            assert field.name in their_fields, f"{path}.{field.name}"
            other = their_fields[field.name]
            assert (field.number, field.type, field.label, field.type_name) == \
                (other.number, other.type, other.label, other.type_name), f"{path}.{field.name}"
            if field.HasField("oneof_index"):
                assert mine.oneof_decl[field.oneof_index].name == their.oneof_decl[other.oneof_index].name
        assert mine.options.map_entry == their.options.map_entry, path
        nested = {message.name: message for message in their.nested_type}
        for message in mine.nested_type:
            assert message.name in nested, f"{path}.{message.name}"
            compare(message, nested[message.name], f"{path}.{message.name}")

    tops = {message.name: message for message in theirs.message_type}
    mine = file_descriptor()
    assert mine.package == theirs.package and len(mine.message_type) == len(MESSAGES) == 20
    for message in mine.message_type:
        compare(message, tops[message.name], message.name)


def test_integer_inputs_are_checked_as_over_http():
    """A model with a token-id input: the range of the request contract and typed contents that do not fit."""
    from builder.serving.grpc_v2 import MESSAGES, decode_inputs
    from builder.serving.protocol import RequestError, decode_inputs as decode_json

    inputs = {"ids": ("int64", [None, None]), "small": ("int8", [None, 2])}
    contract = {"ranges": {"ids": [0, 100]}, "dims": {"ids": [None, "seq"], "small": [None, None]},
                "longest": {"seq": 4}}

    def grpc_request(ids, small, raw):
        request = MESSAGES["ModelInferRequest"](model_name="m")
        for name, value, field in (("ids", ids, "int64_contents"), ("small", small, "int_contents")):
            tensor = request.inputs.add(name=name, datatype="INT64" if name == "ids" else "INT8", shape=np.shape(value))
            if raw:
                request.raw_input_contents.append(np.asarray(value, inputs[name][0]).tobytes())
            else:
                getattr(tensor.contents, field).extend(np.ravel(value).tolist())
        return request

    def json_request(ids, small):
        return {"inputs": [{"name": "ids", "shape": list(np.shape(ids)), "datatype": "INT64", "data": np.ravel(ids).tolist()},
                           {"name": "small", "shape": list(np.shape(small)), "datatype": "INT8",
                            "data": np.ravel(small).tolist()}]}

    feeds = decode_inputs(grpc_request([[1, 2, 3]], [[1, -1]], raw=True), inputs, False, contract, None)
    assert feeds["ids"].tolist() == [[1, 2, 3]] and feeds["small"].dtype == np.int8
    for ids in ([[1, 100, 3]], [[1, 2, 3, 4, 5]]):
        for raw in (True, False):
            with pytest.raises(RequestError) as over_grpc:
                decode_inputs(grpc_request(ids, [[1, 1]], raw), inputs, False, contract, None)
            with pytest.raises(RequestError) as over_http:
                decode_json(json_request(ids, [[1, 1]]), b"", inputs, False, contract)
            assert str(over_grpc.value) == str(over_http.value)
    with pytest.raises(RequestError, match="contents.int_contents holds a value outside INT8"):
        decode_inputs(grpc_request([[1]], [[1, 300]], raw=False), inputs, False, contract, None)
    with pytest.raises(RequestError, match="raw_input_contents holds 2 bytes; shape \\[1, 3\\] of int8 needs 3"):
        request = grpc_request([[1]], [[1, 2, 3]], raw=True)
        request.raw_input_contents[1] = b"\0\0"
        decode_inputs(request, {**inputs, "small": ("int8", [None, 3])}, False, contract, None)


def test_unsigned_inputs_travel_raw_and_typed():
    """UINT16/32/64: in contents.uint_contents / uint64_contents and raw, as over HTTP's JSON."""
    from builder.serving.grpc_v2 import MESSAGES, decode_inputs
    from builder.serving.protocol import decode_inputs as decode_json

    inputs = {"a": ("uint16", [None, 2]), "b": ("uint32", [None, 2]), "c": ("uint64", [None, 2])}
    contract = {"ranges": {}, "dims": {}, "longest": {}}
    values = {"a": [[1, 65535]], "b": [[2, 4294967295]], "c": [[3, 2**63 - 1]]}
    for raw in (True, False):
        request = MESSAGES["ModelInferRequest"](model_name="m")
        for name, value in values.items():
            dtype = inputs[name][0]
            tensor = request.inputs.add(name=name, datatype=dtype.upper(), shape=[1, 2])
            if raw:
                request.raw_input_contents.append(np.asarray(value, dtype).tobytes())
            else:
                field = "uint64_contents" if dtype == "uint64" else "uint_contents"
                getattr(tensor.contents, field).extend(np.asarray(value, dtype).ravel().tolist())
        feeds = decode_inputs(request, inputs, False, contract, None)
        assert {name: (array.dtype.name, array.tolist()) for name, array in feeds.items()} == \
            {name: (inputs[name][0], value) for name, value in values.items()}
    body = {"inputs": [{"name": name, "shape": [1, 2], "datatype": inputs[name][0].upper(), "data": value[0]}
                       for name, value in values.items()]}
    assert decode_json(body, b"", inputs, False, contract)["c"].tolist() == values["c"]
