"""TorchServe handler of an mdbuild artifact's model archive. It runs the model with the artifact's own
runtime module (runtime.py, as serve.py does) and answers, per request:
- a KServe v2 JSON body ({"inputs": [{"name", "shape", "datatype", "data"}]}) with the v2 JSON response;
- a PNG or JPEG image, where the recipe has labels: the recipe's preprocessing, then the top classes
  ({"predictions": [{"index", "label", "score"}]}), as the artifact's /classify route does."""

import io
import json
import os
import sys

import numpy as np
from ts.torch_handler.base_handler import BaseHandler

_V2_TYPES = {"FP32": "float32", "FP16": "float16", "FP64": "float64", "INT64": "int64", "INT32": "int32",
             "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}
_V2_NAMES = {value: key for key, value in _V2_TYPES.items()}


class MdbuildHandler(BaseHandler):
    def initialize(self, context):
        model_dir = context.system_properties["model_dir"]
        sys.path.insert(0, model_dir)
        import runtime  # the artifact's own loader, shipped in the archive

        with open(os.path.join(model_dir, "mdbuild.json")) as handle:
            self.spec = json.load(handle)
        labels = os.path.join(model_dir, "labels.txt")
        self.labels = [line.strip() for line in open(labels) if line.strip()] if os.path.isfile(labels) else None
        settings = dict(self.spec["runtime"])
        self.model = runtime.load(model_dir, settings)
        self.name = context.model_name
        self.initialized = True

    def handle(self, data, context):
        return [self._answer(row.get("data") if row.get("data") is not None else row.get("body")) for row in data]

    def _answer(self, body):
        if isinstance(body, (bytes, bytearray)) and bytes(body[:4]) in (b"\x89PNG", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xe1") \
                or isinstance(body, (bytes, bytearray)) and bytes(body[:3]) == b"\xff\xd8\xff":
            return self._classify(bytes(body))
        request = json.loads(body) if isinstance(body, (bytes, bytearray, str)) else body
        feeds = {}
        for tensor in request["inputs"]:
            dtype = _V2_TYPES[tensor["datatype"]]
            feeds[tensor["name"]] = np.asarray(tensor["data"], dtype=dtype).reshape(tensor["shape"])
        wanted = [output["name"] for output in request.get("outputs", [])] or None
        results = self.model.run(feeds, wanted)
        return {"model_name": self.name, "outputs": [
            {"name": name, "datatype": _V2_NAMES.get(str(value.dtype), str(value.dtype)), "shape": list(value.shape),
             "data": value.reshape(-1).tolist()} for name, value in results.items()]}

    def _classify(self, body):
        if not self.labels or not self.spec["preprocess"]:
            raise ValueError("this model takes no images: its recipe declares no serving.labels")
        from preprocess import load_image

        (name, (dtype, _)), = self.model.inputs.items()
        pixels = load_image(io.BytesIO(body), self.spec["preprocess"], formats=["PNG", "JPEG"])
        output = self.spec["output"] or next(iter(self.model.outputs))
        scores = self.model.run({name: pixels[None].astype(dtype)})[output][0].astype(np.float64).reshape(-1)
        if self.spec["scores"] == "softmax":
            scores = np.exp(scores - scores.max())
            scores /= scores.sum()
        best = np.argsort(-scores)[: max(1, self.spec["top_k"])]
        return {"model_name": self.name, "predictions": [
            {"index": int(i), "label": self.labels[i] if i < len(self.labels) else str(i), "score": float(scores[i])}
            for i in best]}
