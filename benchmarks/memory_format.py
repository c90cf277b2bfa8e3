"""Dense models on the CPU: NCHW (the tutorials) against channels_last (what the engine runs), same weights and
inputs: images/s (medians, interleaved) and what the layout changes in the output (largest logit difference,
labels whose argmax differs).

    .venv/bin/python benchmarks/memory_format.py                  # 4 models, batch 4 of 256x256, median of 3
    .venv/bin/python benchmarks/memory_format.py --models lraspp_mobilenet_v3_large --repeats 1   # smoke run

Random weights (nothing downloads): the logit margins between classes are far smaller than a trained model's,
so the flipped-label count is an upper bound of what the rounding does to real predictions.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("deeplabv3_resnet50", "fcn_resnet50", "lraspp_mobilenet_v3_large", "unet")


def main(argv: list[str] | None = None) -> int:
    import torch

    from segpipe.inference.models import build_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (a shared machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"CPU, {torch.get_num_threads()} torch threads, batch {args.batch_size} of {args.size}x{args.size}, medians of {args.repeats}")
    for name in args.models.split(","):
        torch.manual_seed(0)
        nchw = build_model(name, num_classes=21).eval()
        last = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
        x = torch.randn(args.batch_size, 3, args.size, args.size)
        x_last = x.contiguous(memory_format=torch.channels_last)

        def logits(model: torch.nn.Module, inp: torch.Tensor) -> torch.Tensor:
            out = model(inp)
            return out["out"] if isinstance(out, dict) else out

        times: dict[str, list[float]] = {"nchw": [], "channels_last": []}
        with torch.inference_mode():
            a, b = logits(nchw, x), logits(last, x_last)  # also the warm-up
            for _ in range(args.repeats):  # interleaved: a busy neighbour hits both alike
                for label, model, inp in (("nchw", nchw, x), ("channels_last", last, x_last)):
                    start = time.perf_counter()
                    logits(model, inp).argmax(1)
                    times[label].append(args.batch_size / (time.perf_counter() - start))
        ips = {k: statistics.median(v) for k, v in times.items()}
        flipped = int((a.argmax(1) != b.argmax(1)).sum())
        print(f"{name:28s} NCHW {ips['nchw']:7.2f} img/s, channels_last {ips['channels_last']:7.2f} img/s "
              f"({ips['channels_last'] / ips['nchw']:.2f}x); max |logit difference| {float((a - b).abs().max()):.2g}, "
              f"labels differing {flipped} of {a.shape[0] * a.shape[2] * a.shape[3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
