"""Three ways to run the per-chunk convolution terms of the batched GC step, per ResNet-18 conv shape.

The batched GC step (trd.losses.chunked_convolution) runs three terms chunk by chunk, each chunk m with its own
weight direction U_m: the chunk's weight gradient ``dW_m = weight_grad(x_m, dy_m)``, ``conv(x_m, U_m)`` and
``conv_T(dy_m, U_m)``. They are the work that grows with c. For each 3x3 convolution shape of CIFAR ResNet-18 at
batch 128 and each c, this times the three terms done:

* ``per_chunk``  as trd does: one oneDNN/cuDNN call per chunk and term;
* ``grouped``    as one grouped convolution per term, the chunks stacked along the channels (groups = c);
* ``bmm``        by im2col (``F.unfold``) and one batched matrix product per term, col2im for conv_T;

against ``whole``: the same three terms with ONE weight on the whole batch (three calls), the floor that no
per-chunk execution can beat. Medians over the repetitions, one process.

    python bench/chunk_kernels.py             # the table in bench/README.md
    python bench/chunk_kernels.py --quick     # a smoke run
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time

import torch
import torch.nn.functional as F

# (channels, spatial size) of CIFAR ResNet-18's 3x3 convolutions with equal in and out channels.
SHAPES = ((64, 32), (128, 16), (256, 8), (512, 4))
_conv_backward = torch.ops.aten.convolution_backward


def _backward(dy, x, weight, mask, groups=1):
    return _conv_backward(dy, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], groups, mask)


def whole(x, dy, weights):
    w = weights[0]
    return _backward(dy, x, w, [False, True, False])[1], F.conv2d(x, w, padding=1), _backward(dy, x, w, [True, False, False])[0]


def per_chunk(x, dy, weights):
    c = len(weights)
    xs, dys = x.chunk(c), dy.chunk(c)
    d_weights = [_backward(d, xm, weights[0], [False, True, False])[1] for d, xm in zip(dys, xs)]
    ys = torch.cat([F.conv2d(xm, u, padding=1) for xm, u in zip(xs, weights)])
    dxs = torch.cat([_backward(d, xm, u, [True, False, False])[0] for d, xm, u in zip(dys, xs, weights)])
    return torch.stack(d_weights), ys, dxs


def _to_groups(t, c):
    n, ch, h, w = t.shape
    return t.view(c, n // c, ch, h, w).transpose(0, 1).reshape(n // c, c * ch, h, w)


def _from_groups(t, c):
    m, cch, h, w = t.shape
    return t.view(m, c, cch // c, h, w).transpose(0, 1).reshape(c * m, cch // c, h, w)


def grouped(x, dy, weights):
    c = len(weights)
    stacked = torch.cat(weights)
    xg, dyg = _to_groups(x, c), _to_groups(dy, c)
    d_weight = _backward(dyg, xg, stacked, [False, True, False], groups=c)[1]
    y = F.conv2d(xg, stacked, padding=1, groups=c)
    dx = _backward(dyg, xg, stacked, [True, False, False], groups=c)[0]
    return d_weight.view(c, *weights[0].shape), _from_groups(y, c), _from_groups(dx, c)


def bmm(x, dy, weights):
    c = len(weights)
    n, ch, h, w = x.shape
    out, length = weights[0].shape[0], h * w
    cols = F.unfold(x, 3, padding=1).view(c, n // c, ch * 9, length).permute(0, 2, 1, 3).reshape(c, ch * 9, -1)
    grads = dy.reshape(c, n // c, out, length).permute(0, 2, 1, 3).reshape(c, out, -1)
    stacked = torch.stack([u.reshape(out, -1) for u in weights])
    d_weight = torch.bmm(grads, cols.transpose(1, 2)).view(c, *weights[0].shape)
    y = torch.bmm(stacked, cols).view(c, out, n // c, length).permute(0, 2, 1, 3).reshape(n, out, h, w)
    dx_cols = torch.bmm(stacked.transpose(1, 2), grads).view(c, ch * 9, n // c, length).permute(0, 2, 1, 3)
    dx = F.fold(dx_cols.reshape(n, ch * 9, length), (h, w), 3, padding=1)
    return d_weight, y, dx


WAYS = {"whole": whole, "per_chunk": per_chunk, "grouped": grouped, "bmm": bmm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--chunks", type=int, nargs="+", default=[2, 16])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="batch 16, c = 2, one repetition")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.chunks, args.reps = 16, [2], 1
    torch.set_num_threads(args.threads)
    print(f"# {datetime.date.today()}, {platform.processor() or platform.machine()} CPU, torch {torch.__version__}, "
          f"{args.threads} threads, batch {args.batch}, medians of {args.reps} (ms, the three terms together)\n")
    print("| channels | size | c | " + " | ".join(WAYS) + " |\n|---:|---:|---:|" + "---:|" * len(WAYS))
    generator = torch.Generator().manual_seed(0)
    for channels, size in SHAPES:
        x = torch.randn(args.batch, channels, size, size, generator=generator)
        dy = torch.randn(args.batch, channels, size, size, generator=generator)
        for c in args.chunks:
            weights = [torch.randn(channels, channels, 3, 3, generator=generator) / channels for _ in range(c)]
            reference = per_chunk(x, dy, weights)
            for name in ("grouped", "bmm"):
                for got, want in zip(WAYS[name](x, dy, weights), reference):
                    torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * want.abs().max().item())  # float32 sums of many terms
            times = {name: [] for name in WAYS}
            for _ in range(args.reps):
                for name, way in WAYS.items():
                    way(x, dy, weights)  # untimed: the allocator's steady state
                    start = time.perf_counter()
                    way(x, dy, weights)
                    times[name].append(time.perf_counter() - start)
            cells = " | ".join(f"{statistics.median(times[name]) * 1000:.1f}" for name in WAYS)
            print(f"| {channels} | {size} | {c} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
