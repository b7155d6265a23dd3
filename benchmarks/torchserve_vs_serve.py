"""The pytorch target's artifact served two ways, on the same model and the same requests (KServe v2
binary tensors): its own serve.py, and TorchServe with the artifact's archive (torchserve/<recipe>.mar,
one worker, as serve.py runs one model). p50 at concurrency 1 and 8, in interleaved rounds.

    python benchmarks/torchserve_vs_serve.py --recipe resnet50 --rounds 3 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from _common import artifacts, load_artifact, mdbuild, print_host, torchserve
from serving_load import binary_body, load, start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="resnet50")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per server, concurrency and round")
    args = parser.parse_args()
    print_host()
    with tempfile.TemporaryDirectory() as work:
        cache = Path(os.environ.get("MDBUILD_CACHE_DIR") or Path(work) / "cache")
        _, out = mdbuild([f"+recipe={args.recipe}", "target=pytorch", "verify=quick"], Path(work), cache)
        artifact = artifacts(out)[-1]
        _, feeds, manifest = load_artifact(artifact)
        body, headers = binary_body(feeds)
        name = manifest["recipe"]
        own, port = start(artifact)
        p50 = {(server, clients): [] for server in ("serve.py", "TorchServe") for clients in (1, 8)}
        try:
            with torchserve({name: artifact / "torchserve" / f"{name}.mar"}, Path(work)) as base:
                paths = {"serve.py": (port, f"/v2/models/{name}/infer"),
                         "TorchServe": (int(base.rsplit(":", 1)[1]), f"/predictions/{name}")}
                for server, (at, path) in paths.items():  # warm both: the first requests are slow
                    load(at, path, body, headers, 8, 5.0)
                for _ in range(args.rounds):
                    for clients in (1, 8):
                        for server, (at, path) in paths.items():
                            p50[server, clients].append(load(at, path, body, headers, clients, args.seconds)["p50"])
        finally:
            own.terminate()
            own.wait(timeout=30)
    for clients in (1, 8):
        ours, theirs = (statistics.median(p50[server, clients]) for server in ("serve.py", "TorchServe"))
        print(f"{args.recipe} pytorch, c={clients}: p50 serve.py {ours:.2f} ms, TorchServe {theirs:.2f} ms "
              f"(TorchServe / serve.py {theirs / ours:.2f}); rounds: serve.py "
              f"{', '.join(f'{v:.2f}' for v in p50['serve.py', clients])}, TorchServe "
              f"{', '.join(f'{v:.2f}' for v in p50['TorchServe', clients])}")


if __name__ == "__main__":
    main()
