"""Long steps show what they are doing while they run."""

import io
import time

from builder.progress import Console


def test_a_long_step_prints_heartbeats_with_its_progress():
    stream = io.StringIO()
    console = Console(stream, heartbeat_s=0.1)
    with console.step("[1/5] export") as progress:
        progress("torch.onnx.export (torchscript, opset 18)")
        time.sleep(0.45)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2
    assert all(line.startswith("[1/5] export  ... ") for line in lines)
    assert lines[-1].endswith("torch.onnx.export (torchscript, opset 18)")


def test_a_short_step_prints_nothing_extra():
    stream = io.StringIO()
    with Console(stream, heartbeat_s=10).step("[2/5] compile  "):
        pass
    assert stream.getvalue() == ""
