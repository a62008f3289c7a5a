"""A compute-realistic BEN2 stand-in: BEN2's I/O contract and roughly its size and cost, random weights.

    python bench/realistic_standin.py [--out PATH] [--dynamic-batch] [--size 1024] [--force]

BENCHMARK FIXTURE ONLY. It is never downloaded, never shipped and never used by the product;
its matte is meaningless (random weights). It exists so that time, memory and load cost can be
measured with a network shaped like the real one, which nobody here may download.

What it is (our own network, written from the published description of BEN2/MVANet, no code
copied): the 1024² input is seen as five 512² views, one global view (the whole image
downscaled) and four local crops (its quadrants). All five go through one Swin-B-class
windowed-attention encoder as a batch of five (patch size 4, widths 128/256/512/1024, depths
2/2/18/2, heads 4/8/16/32, window 12 with shifted windows on every other block, as MVANet's
Swin-B). A light decoder projects the four stages to 64 channels, merges them top-down, lets the
local views' deepest tokens attend to the global view's, stitches the four local maps back into
one 2x2 mosaic, fuses it with the upsampled global map and predicts one channel, upsampled to
1024², sigmoid, cast to float16. About 90 M parameters (BEN2: 94.6 M).

I/O (as the published ``BEN2_Base.onnx``): input ``input.1`` float32 [1,3,1024,1024], output
float16 [1,1,1024,1024], opset 17. ``--dynamic-batch`` writes a float32-output variant with a
dynamic batch axis (as a re-export might have), for the batching path.

The built file is cached outside the clone (it is ~360 MB): ``$BEN2_WORKER_BENCH_CACHE`` or
``~/.cache/ben2-worker/standins/``, named by a hash of this script and the build options, so a
changed script builds anew and an unchanged one is reused. torch (CPU is enough) and onnx are
needed to build; only onnxruntime to run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

#: What every table quoting this model must say about it.
STANDIN_LABEL = ("realistic BEN2 stand-in (benchmark fixture built by bench/realistic_standin.py: random weights, "
                 "meaningless matte; time, memory and load cost only)")

INPUT_NAME = "input.1"
OUTPUT_NAME = "matte"
OPSET = 17

#: Swin-B as MVANet uses it.
EMBED_DIM = 128
DEPTHS = (2, 2, 18, 2)
HEADS = (4, 8, 16, 32)
WINDOW = 12
DECODER_DIM = 64


def cache_dir() -> Path:
    root = os.environ.get("BEN2_WORKER_BENCH_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "ben2-worker" / "standins"


def script_hash() -> str:
    """Hash of the code that decides the built file (network, export, shape constants), so
    editing comments or the command line does not force a ~5 minute rebuild."""
    import inspect

    parts = [inspect.getsource(build_network), inspect.getsource(export),
             repr((INPUT_NAME, OUTPUT_NAME, OPSET, EMBED_DIM, DEPTHS, HEADS, WINDOW, DECODER_DIM))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def cached_path(
    *, dynamic_batch: bool = False, size: int = 1024, depths: tuple[int, ...] = DEPTHS, width: int = EMBED_DIM
) -> Path:
    """Where the stand-in with these options lives in the cache (built or not)."""
    tag = "dynbatch-f32out" if dynamic_batch else "b1-f16out"
    shape_tag = "" if (tuple(depths), width) == (DEPTHS, EMBED_DIM) else f"-d{''.join(map(str, depths))}-w{width}"
    return cache_dir() / f"ben2_realistic_{script_hash()}_{size}_{tag}{shape_tag}.onnx"


# ----------------------------------------------------------------------------- the network


def build_network(
    size: int = 1024, depths: tuple[int, ...] = DEPTHS, seed: int = 0, float16_output: bool = True,
    width: int = EMBED_DIM,
):
    """The torch module (random weights, eval mode). Imported lazily: torch is heavy."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.manual_seed(seed)
    view = size // 2
    if view % 32:
        raise ValueError(f"size must be a multiple of 64, got {size}")

    class WindowAttention(nn.Module):
        def __init__(self, dim: int, heads: int, window: int):
            super().__init__()
            self.heads, self.window = heads, window
            self.scale = (dim // heads) ** -0.5
            self.qkv = nn.Linear(dim, dim * 3)
            self.proj = nn.Linear(dim, dim)
            self.bias_table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.02)
            coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
            rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
            self.register_buffer("bias_index", (rel[..., 0] * (2 * window - 1) + rel[..., 1]).flatten(), persistent=False)

        def forward(self, x):  # x: (windows, tokens, dim)
            n, t, c = x.shape
            qkv = self.qkv(x).reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = (q * self.scale) @ k.transpose(-2, -1)
            bias = self.bias_table[self.bias_index].reshape(t, t, self.heads).permute(2, 0, 1)
            attn = (attn + bias.unsqueeze(0)).softmax(-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(n, t, c))

    class SwinBlock(nn.Module):
        def __init__(self, dim: int, heads: int, window: int, shift: int):
            super().__init__()
            self.window, self.shift = window, shift
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.attn = WindowAttention(dim, heads, window)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

        def forward(self, x, h: int, w: int):  # x: (B, h*w, C)
            b, _, c = x.shape
            ws = self.window
            y = self.norm1(x).reshape(b, h, w, c)
            ph, pw = (ws - h % ws) % ws, (ws - w % ws) % ws
            if ph or pw:
                y = F.pad(y, (0, 0, 0, pw, 0, ph))
            hp, wp = h + ph, w + pw
            if self.shift:
                y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
            win = y.reshape(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
            win = self.attn(win)
            y = win.reshape(b, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
            if self.shift:
                y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
            y = y[:, :h, :w, :].reshape(b, h * w, c)
            x = x + y
            return x + self.mlp(self.norm2(x))

    class PatchMerge(nn.Module):
        def __init__(self, dim: int):
            super().__init__()
            self.norm = nn.LayerNorm(4 * dim)
            self.reduce = nn.Linear(4 * dim, 2 * dim, bias=False)

        def forward(self, x, h: int, w: int):
            b, _, c = x.shape
            x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, (h // 2) * (w // 2), 4 * c)
            return self.reduce(self.norm(x))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, width, 4, 4)
            self.patch_norm = nn.LayerNorm(width)
            self.stages, self.merges, self.norms = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
            dim = width
            for i, (depth, heads) in enumerate(zip(depths, HEADS)):
                grid = view // 4 // (2**i)
                window = min(WINDOW, grid)
                shift = window // 2 if grid > window else 0
                self.stages.append(nn.ModuleList(SwinBlock(dim, heads, window, shift if j % 2 else 0) for j in range(depth)))
                self.norms.append(nn.LayerNorm(dim))
                if i < len(depths) - 1:
                    self.merges.append(PatchMerge(dim))
                    dim *= 2

        def forward(self, x):  # (B,3,V,V) -> four (B, C_i, V/4/2^i, V/4/2^i) maps
            x = self.patch(x)
            b, c, h, w = x.shape
            x = self.patch_norm(x.flatten(2).transpose(1, 2))
            feats = []
            for i, blocks in enumerate(self.stages):
                for blk in blocks:
                    x = blk(x, h, w)
                y = self.norms[i](x)
                feats.append(y.transpose(1, 2).reshape(b, y.shape[-1], h, w))
                if i < len(self.merges):
                    x = self.merges[i](x, h, w)
                    h, w = h // 2, w // 2
            return feats

    class CrossViewAttention(nn.Module):
        """Local views' deepest tokens attend to the global view's (MVANet-style localisation)."""

        def __init__(self, dim: int, heads: int):
            super().__init__()
            self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

        def forward(self, local_tokens, global_tokens):
            q, kv = self.norm_q(local_tokens), self.norm_kv(global_tokens)
            return local_tokens + self.attn(q, kv, kv, need_weights=False)[0]

    def conv_block(cin: int, cout: int):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class StandinBen2(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Encoder()
            widths = [width * 2**i for i in range(len(depths))]
            self.cross = CrossViewAttention(widths[-1], HEADS[-1])
            self.lateral = nn.ModuleList(nn.Conv2d(w, DECODER_DIM, 1) for w in widths)
            self.smooth = nn.ModuleList(conv_block(DECODER_DIM, DECODER_DIM) for _ in widths[:-1])
            self.fuse = nn.Sequential(conv_block(2 * DECODER_DIM, DECODER_DIM), conv_block(DECODER_DIM, DECODER_DIM))
            self.head = nn.Conv2d(DECODER_DIM, 1, 1)
            self.float16_output = float16_output

        def forward(self, x):  # (N,3,S,S) float32 0..1
            n = x.shape[0]
            glob = F.interpolate(x, size=(view, view), mode="bilinear", align_corners=False)
            tl, tr = x[:, :, :view, :view], x[:, :, :view, view:]
            bl, br = x[:, :, view:, :view], x[:, :, view:, view:]
            views = torch.stack([glob, tl, tr, bl, br], dim=1).reshape(n * 5, 3, view, view)
            feats = self.encoder(views)
            deep = feats[-1]  # (5N, C, g, g)
            c, g = deep.shape[1], deep.shape[2]
            tokens = deep.flatten(2).transpose(1, 2).reshape(n, 5, g * g, c)
            local = self.cross(tokens[:, 1:].reshape(n, 4 * g * g, c), tokens[:, 0])
            tokens = torch.cat([tokens[:, :1], local.reshape(n, 4, g * g, c)], dim=1)
            feats[-1] = tokens.reshape(n * 5, g * g, c).transpose(1, 2).reshape(n * 5, c, g, g)
            y = self.lateral[-1](feats[-1])
            for i in range(len(feats) - 2, -1, -1):
                y = F.interpolate(y, size=feats[i].shape[-2:], mode="bilinear", align_corners=False)
                y = self.smooth[i](y + self.lateral[i](feats[i]))
            q = y.shape[-1]  # each view's map at 1/4 of the view
            y = y.reshape(n, 5, DECODER_DIM, q, q)
            top = torch.cat([y[:, 1], y[:, 2]], dim=3)
            bottom = torch.cat([y[:, 3], y[:, 4]], dim=3)
            mosaic = torch.cat([top, bottom], dim=2)  # (N, D, 2q, 2q): local views stitched back
            glob_up = F.interpolate(y[:, 0], size=(2 * q, 2 * q), mode="bilinear", align_corners=False)
            logits = self.head(self.fuse(torch.cat([mosaic, glob_up], dim=1)))
            matte = torch.sigmoid(F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False))
            return matte.half() if self.float16_output else matte

    net = StandinBen2().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def parameter_count(net) -> int:
    return sum(p.numel() for p in net.parameters())


# ----------------------------------------------------------------------------- export


def export(net, path: Path, *, size: int, dynamic_batch: bool) -> None:
    """torch -> ONNX (opset 17), written to a temporary name and moved into place."""
    import torch

    dummy = torch.rand(1, 3, size, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        kwargs = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=OPSET, do_constant_folding=True)
        if dynamic_batch:
            kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
        with torch.inference_mode():
            try:
                torch.onnx.export(net, (dummy,), tmp, dynamo=False, **kwargs)
            except TypeError:  # a torch without the dynamo switch
                torch.onnx.export(net, (dummy,), tmp, **kwargs)
        import onnx

        model = onnx.load(tmp, load_external_data=False)
        model.producer_name = "ben2-worker-bench-realistic-standin"
        # The tracer leaves the output's channel and spatial sides symbolic; BEN2's are fixed.
        for dim, value in zip(model.graph.output[0].type.tensor_type.shape.dim[1:], (1, size, size)):
            dim.Clear()
            dim.dim_value = value
        onnx.checker.check_model(model)
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def ensure_standin(
    *, dynamic_batch: bool = False, size: int = 1024, depths: tuple[int, ...] = DEPTHS, width: int = EMBED_DIM,
    out: Path | None = None, force: bool = False, quiet: bool = False,
) -> Path:
    """Path of the built stand-in, building it (once per network version) if it is not cached."""
    path = out or cached_path(dynamic_batch=dynamic_batch, size=size, depths=depths, width=width)
    if path.is_file() and not force:
        return path
    t0 = time.perf_counter()
    net = build_network(size, depths, float16_output=not dynamic_batch, width=width)
    count = parameter_count(net)
    export(net, path, size=size, dynamic_batch=dynamic_batch)
    if not quiet:
        print(
            f"built realistic BEN2 stand-in (BENCHMARK FIXTURE, random weights, meaningless matte): "
            f"{count / 1e6:.1f} M parameters, {path.stat().st_size / 1e6:.0f} MB, "
            f"{time.perf_counter() - t0:.0f} s -> {path}",
            file=sys.stderr,
        )
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write here instead of the cache")
    ap.add_argument("--dynamic-batch", action="store_true", help="dynamic batch axis, float32 output")
    ap.add_argument("--size", type=int, default=1024, help="input side (1024 = BEN2's contract)")
    ap.add_argument("--depths", default=",".join(map(str, DEPTHS)), help="Swin stage depths (smaller = quicker tests)")
    ap.add_argument("--width", type=int, default=EMBED_DIM, help="first stage's width (Swin-B: 128)")
    ap.add_argument("--force", action="store_true", help="rebuild even when cached")
    ap.add_argument("--count-only", action="store_true", help="print the parameter count and exit")
    args = ap.parse_args(argv)
    depths = tuple(int(d) for d in args.depths.split(","))
    if args.count_only:
        print(f"{parameter_count(build_network(args.size, depths, width=args.width)) / 1e6:.2f} M parameters")
        return
    path = ensure_standin(dynamic_batch=args.dynamic_batch, size=args.size, depths=depths, width=args.width,
                          out=args.out, force=args.force)
    print(path)


if __name__ == "__main__":
    main()
