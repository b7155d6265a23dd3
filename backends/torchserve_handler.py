"""TorchServe handler of an mdbuild artifact's model archive. It runs the model with the artifact's own
runtime module (runtime.py) and decodes, checks and answers requests with the artifact server's own
protocol module (protocol.py), so TorchServe accepts and refuses what serve.py does:
- a KServe v2 body (JSON, or JSON header + binary tensors with Inference-Header-Content-Length) is
  answered with the v2 response;
- a PNG or JPEG image, where the recipe has labels: the recipe's preprocessing, then the top classes
  ({"predictions": [{"index", "label", "score"}]}), as the artifact's /classify route does.
A refused request is answered with its own status and message; the other requests of a batch are not."""

import io
import json
import os
import sys

import numpy as np
from ts.torch_handler.base_handler import BaseHandler

_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff")


class MdbuildHandler(BaseHandler):
    def initialize(self, context):
        model_dir = context.system_properties["model_dir"]
        sys.path.insert(0, model_dir)
        import protocol  # the artifact server's request decoding and checks, shipped in the archive
        import runtime  # the artifact's own loader

        self.protocol = protocol
        with open(os.path.join(model_dir, "mdbuild.json")) as handle:
            self.spec = json.load(handle)
        labels = os.path.join(model_dir, "labels.txt")
        with open(labels) if os.path.isfile(labels) else io.StringIO() as handle:
            self.labels = [line.strip() for line in handle if line.strip()]
        self.model = runtime.load(model_dir, self.spec["runtime"])
        self.name = context.model_name
        self.initialized = True

    def handle(self, data, context):
        answers = []
        for index, row in enumerate(data):
            body = row.get("data") if row.get("data") is not None else row.get("body")
            headers = {key.lower(): value for key, value in (context.get_all_request_header(index) or {}).items()}
            try:
                answer, reply_headers = self._answer(body, headers)
            except self.protocol.RequestError as refused:
                context.set_response_status(refused.status, str(refused), index)
                answer, reply_headers = json.dumps({"error": str(refused)}), {"Content-Type": "application/json"}
            for key, value in reply_headers.items():
                if key == "Content-Type":
                    context.set_response_content_type(index, value)
                else:
                    context.set_response_header(index, key, value)
            answers.append(answer)
        return answers

    def _answer(self, body, headers):
        if isinstance(body, (dict, list)):  # TorchServe parsed a JSON body already
            body = json.dumps(body).encode()
        body = bytes(body) if isinstance(body, (bytes, bytearray)) else str(body or "").encode()
        if body.startswith(_IMAGE_MAGIC):
            return self._classify(body)
        protocol = self.protocol
        request, binary = protocol.split_body(body, headers.get(protocol.HEADER_LENGTH.lower()))
        feeds = protocol.decode_inputs(request, binary, self.model.inputs, self.spec["allow_nonfinite"],
                                       self.spec["requests"])
        outputs = protocol.requested_outputs(request, self.model.outputs)
        results = self.model.run(feeds, [name for name, _ in outputs])
        return protocol.encode_response(self.name, request.get("id"), results, outputs)

    def _classify(self, body):
        if not self.labels or not self.spec["preprocess"]:
            raise self.protocol.RequestError("this model takes no images: its recipe declares no serving.labels",
                                             status=404, kind="not_found")
        from PIL import Image, UnidentifiedImageError
        from preprocess import load_image

        (name, (dtype, _)), = self.model.inputs.items()
        try:
            pixels = load_image(io.BytesIO(body), self.spec["preprocess"], formats=["PNG", "JPEG"])
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise self.protocol.RequestError(f"the body is not a PNG or JPEG image this server can read ({exc})") from None
        output = self.spec["output"] or next(iter(self.model.outputs))
        scores = self.model.run({name: pixels[None].astype(dtype)})[output][0].astype(np.float64).reshape(-1)
        if self.spec["scores"] == "softmax":
            scores = np.exp(scores - scores.max())
            scores /= scores.sum()
        best = np.argsort(-scores)[: max(1, self.spec["top_k"])]
        predictions = [{"index": int(i), "label": self.labels[i] if i < len(self.labels) else str(i),
                        "score": float(scores[i])} for i in best]
        return json.dumps({"model_name": self.name, "predictions": predictions}), {"Content-Type": "application/json"}
