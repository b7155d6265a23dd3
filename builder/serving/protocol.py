"""KServe v2 / Open Inference Protocol REST bodies: JSON tensors and the binary tensor data
extension (Inference-Header-Content-Length, binary_data / binary_data_size parameters), and the
checks of a request's tensors that every transport (REST, gRPC, TorchServe's handler) shares."""

import json
import math

import numpy as np

DATATYPES = {
    "FP32": "float32", "FP16": "float16", "FP64": "float64", "INT64": "int64", "INT32": "int32",
    "INT16": "int16", "INT8": "int8", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "BOOL": "bool",
}
V2_NAMES = {dtype: name for name, dtype in DATATYPES.items()}
HEADER_LENGTH = "Inference-Header-Content-Length"


class RequestError(Exception):
    """The client's request is wrong: answered with `status` and this message; `kind` labels the
    error in the metrics."""

    def __init__(self, message, status=400, kind="bad_request"):
        super().__init__(message)
        self.status = status
        self.kind = kind


def split_body(body, header_length):
    """(the JSON request, the binary tail) of a request body."""
    if header_length is None:
        return _json(body), b""
    try:
        size = int(header_length)
    except ValueError:
        raise RequestError(f"{HEADER_LENGTH} is not a number", kind="bad_binary") from None
    if not 0 <= size <= len(body):
        raise RequestError(f"{HEADER_LENGTH} is {size} but the body has {len(body)} bytes", kind="bad_binary")
    return _json(body[:size]), body[size:]


def _json(data):
    try:
        request = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"the body is not valid JSON: {exc}", kind="bad_json") from None
    except RecursionError:
        raise RequestError("the body's JSON is nested too deeply", kind="bad_json") from None
    if not isinstance(request, dict):
        raise RequestError('the body must be a JSON object with an "inputs" list', kind="bad_json")
    return request


def decode_inputs(request, binary, model_inputs, allow_nonfinite, contract, max_rows=None):
    """{name: array} from a JSON request's inputs (JSON values or the binary tail), checked as every
    transport checks them (check_tensor, check_values, check_feeds)."""
    tensors = request.get("inputs")
    if not isinstance(tensors, list):
        raise RequestError('the body must be a JSON object with an "inputs" list')
    feeds, offset = {}, 0
    for tensor in tensors:
        if not isinstance(tensor, dict):
            raise RequestError("each entry of inputs must be an object with name, shape, datatype and data")
        name = tensor.get("name")
        dtype, shape = check_tensor(name, tensor.get("datatype"), tensor.get("shape"), model_inputs, feeds)
        size = _parameters(tensor).get("binary_data_size")
        if size is not None:
            array, offset = _from_binary(name, binary, offset, size, dtype, shape)
        else:
            array = _from_json(name, tensor.get("data"), dtype, shape)
        feeds[name] = check_values(name, array, allow_nonfinite, contract)
    if offset != len(binary):
        raise RequestError(f"{len(binary) - offset} bytes of binary data belong to no input", kind="bad_binary")
    check_feeds(feeds, model_inputs, contract, max_rows)
    return feeds


def check_tensor(name, datatype, shape, model_inputs, given):
    """(dtype, shape) of one input as a request declares it: a known name, not in `given` already, the
    model's datatype, and a shape of the model's rank that fits its fixed dimensions."""
    if not isinstance(name, str) or name not in model_inputs:
        raise RequestError(f"unknown input {name!r}; this model takes {sorted(model_inputs)}", kind="bad_input")
    if name in given:
        raise RequestError(f"input {name!r} is given twice", kind="bad_input")
    dtype, dims = model_inputs[name]
    expected_type = V2_NAMES.get(dtype, dtype)
    if datatype != expected_type:
        raise RequestError(f"input {name!r} has datatype {datatype!r}; expected {expected_type}", kind="bad_input")
    if isinstance(shape, list) and 0 in shape:
        raise RequestError(f"input {name!r} has shape {shape}: a request holds at least one row and one of each "
                           "dimension", kind="bad_input")
    if (not isinstance(shape, list) or len(shape) != len(dims)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
            or any(d is not None and d != s for d, s in zip(dims, shape))):
        wanted = ["-1" if d is None else str(d) for d in dims]
        raise RequestError(f"input {name!r} has shape {shape}; expected [{', '.join(wanted)}] (-1: any size)", kind="bad_input")
    return dtype, shape


def check_values(name, array, allow_nonfinite, contract):
    """The array, once its values are ones the model takes: finite (unless allowed) and, for an integer
    input, within the range the manifest's request contract declares (a token id past the vocabulary)."""
    if not allow_nonfinite and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise RequestError(f"input {name!r} holds NaN or Inf values, which this model does not accept", kind="bad_input")
    ranges = contract["ranges"]
    if name in ranges and array.size:
        low, high = ranges[name]
        outside = ((array < low) if low is not None else False) | ((array >= high) if high is not None else False)
        if np.any(outside):
            raise RequestError(f"input {name!r} holds {array[outside].ravel()[0]}, outside its declared range "
                               f"[{'-inf' if low is None else low}, {'inf' if high is None else high})", kind="bad_input")
    return array


def check_feeds(feeds, model_inputs, contract, max_rows=None):
    """The inputs together: one batch size, none missing, named dimensions that agree and stay within
    what the build verified, and at most `max_rows` rows (an engine's optimization profile)."""
    leading = {array.shape[0] for name, array in feeds.items() if model_inputs[name][1] and model_inputs[name][1][0] is None}
    if len(leading) > 1:
        raise RequestError(f"the inputs disagree on the batch size (first dimension): {sorted(leading)}", kind="bad_input")
    missing = sorted(set(model_inputs) - set(feeds))
    if missing:
        raise RequestError(f"missing inputs {missing}", kind="bad_input")
    _check_dims(feeds, contract)
    if max_rows and any(len(value) > max_rows for value in feeds.values()):
        raise RequestError(f"this engine takes at most {max_rows} rows per request (its optimization profile)")


def _check_dims(feeds, contract):
    """Named dimensions agree across inputs and stay within the longest size verified."""
    seen = {}
    for name, array in feeds.items():
        for dim, size in zip(contract["dims"].get(name, []), array.shape):
            if dim is None:
                continue
            longest = contract["longest"].get(dim)
            if longest is not None and size > longest:
                raise RequestError(f"input {name!r} has {dim} {size}; this artifact is built and verified for {dim} up "
                                   f"to {longest} (model.dims.{dim})", kind="bad_input")
            if seen.setdefault(dim, (name, size))[1] != size:
                raise RequestError(f"inputs {seen[dim][0]!r} and {name!r} disagree on {dim}: {seen[dim][1]} and {size}",
                                   kind="bad_input")


def _parameters(entry):
    parameters = entry.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise RequestError('"parameters" must be a JSON object')
    return parameters


def _from_binary(name, binary, offset, size, dtype, shape):
    expected = math.prod(shape) * np.dtype(dtype).itemsize
    if not isinstance(size, int) or size != expected:
        raise RequestError(f"input {name!r}: binary_data_size is {size!r}; shape {shape} of {dtype} needs {expected}",
                           kind="bad_binary")
    if offset + size > len(binary):
        raise RequestError(f"input {name!r}: the binary data ends after {len(binary) - offset} of its {size} bytes",
                           kind="bad_binary")
    array = np.frombuffer(binary, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)
    return array, offset + size


# The JSON values each input type takes, as numpy reads them: an FP32 input takes numbers, an INT64 input
# whole numbers, a BOOL input true/false (numpy would turn true into 1.0, "1e3" into 1000.0, 5.9 into 5).
_JSON_KINDS = {"f": "iuf", "i": "iu", "u": "iu", "b": "b"}


def _from_json(name, data, dtype, shape):
    if not isinstance(data, list):
        raise RequestError(f"input {name!r}: data must be a list (or use binary_data_size)", kind="bad_input")
    wanted = V2_NAMES.get(dtype, dtype)
    try:
        given = np.asarray(data)
        if given.dtype.kind not in _JSON_KINDS[np.dtype(dtype).kind]:
            raise TypeError(f"it holds {_described(given)}")
        if given.dtype.kind != "b" and _holds_bool(data):
            raise TypeError("it holds true/false values")
        array = given.astype(dtype) if given.size else np.asarray(data, dtype=dtype)
        if array.dtype.kind in "iu" and not np.array_equal(array, given):
            raise OverflowError("a value does not fit")
    except (TypeError, ValueError, OverflowError) as exc:
        raise RequestError(f"input {name!r}: data is not a list of {wanted} values ({exc})", kind="bad_input") from None
    if array.size != math.prod(shape):
        raise RequestError(f"input {name!r}: {array.size} values do not fill shape {shape}", kind="bad_input")
    return array.reshape(shape)


def _holds_bool(data):
    """Whether nested lists hold a true or false (numpy reads [true, 2.5] as numbers)."""
    pending = [data]
    while pending:
        item = pending.pop()
        if type(item) is list:
            pending.extend(item)
        elif type(item) is bool:
            return True
    return False


def _described(array):
    kinds = {"b": "true/false values", "U": "strings", "O": "values of mixed types", "f": "fractional numbers",
             "i": "whole numbers", "u": "whole numbers"}
    return kinds.get(array.dtype.kind, f"{array.dtype} values")


def requested_outputs(request, model_outputs):
    """[(name, binary?)] in the order the client asked for (all outputs when it did not say)."""
    default_binary = bool(_parameters(request).get("binary_data_output", False))
    wanted = request.get("outputs")
    if wanted is None:
        return [(name, default_binary) for name in model_outputs]
    if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
        raise RequestError('"outputs" must be a list of objects with a name')
    check_outputs([o.get("name") for o in wanted], model_outputs)
    return [(o["name"], bool(_parameters(o).get("binary_data", default_binary))) for o in wanted]


def check_outputs(names, model_outputs):
    unknown = [name for name in names if not isinstance(name, str) or name not in model_outputs]
    if unknown:
        raise RequestError(f"unknown outputs {unknown}; this model has {sorted(model_outputs)}", kind="bad_input")


def encode_response(model_name, request_id, results, outputs):
    """(body, headers): JSON, or JSON header + binary tail when any output is asked for in binary."""
    described, blobs = [], []
    for name, binary in outputs:
        value = np.ascontiguousarray(results[name])
        entry = {"name": name, "datatype": V2_NAMES.get(str(value.dtype), str(value.dtype)), "shape": list(value.shape)}
        if binary:
            blob = value.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = value.reshape(-1).tolist()
        described.append(entry)
    answer = {"model_name": model_name, "model_version": "1", "outputs": described}
    if request_id is not None:
        answer["id"] = request_id
    header = json.dumps(answer).encode("utf-8")
    if not blobs:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(blobs), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
