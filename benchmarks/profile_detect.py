"""Where detection spends its CPU time: each stage of the engine timed on one thread.

Runs the stages that ``detect`` runs in each window (read, assemble the window and cut
its tiles, normalise, ONNX Runtime, decode, NMS, centre refinement, Gaussian
measurement) one after the other on
one thread over every window of a Zarr image, with the engine's own defaults, and
prints the CPU seconds (``time.process_time``) of each and its share. The sum is the
CPU work that ``detect`` spreads over its workers; what is not the model is what the
workers have to hide behind it.

    python benchmarks/profile_detect.py IMAGE.zarr [--no-measure]
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

import streamdet
from streamdet.engine._infer import owned_region, refine_detections, window_tiles
from streamdet.engine._plan import padded_size, plan_windows
from streamdet.engine.contract import normalise
from streamdet.engine.decode import decode
from streamdet.engine.detections import Detections
from streamdet.engine.nms import nms_detections, owned

# the module, not the function that streamdet re-exports under the same name
_detect = importlib.import_module("streamdet.engine.detect")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image")
    ap.add_argument("--no-measure", action="store_true")
    args = ap.parse_args()

    img = streamdet.open_image(args.image)
    model = _detect._load(None, img, threads=1)
    contract = model.contract
    arr, _ = _detect._as_array(img)
    cfg = _detect._configure(contract, (int(arr.chunksize[0]), int(arr.chunksize[1])),
                             chunk=None, halo=None, tile=None, batch=None, threshold=None,
                             iou_threshold=None, split_every=8)
    measure = None if args.no_measure else _detect._measurement(contract, img)
    threshold = (np.asarray(cfg.threshold) if isinstance(cfg.threshold, tuple)
                 else cfg.threshold)
    ny, nx = arr.shape
    stride = contract.stride[-1]
    limit = (0, padded_size(ny, stride), 0, padded_size(nx, stride))
    windows = plan_windows(limit, core=cfg.chunk, halo=cfg.halo + cfg.margin, stride=stride,
                           limit=limit)
    cpu: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        t0 = time.process_time()
        yield
        cpu[name] += time.process_time() - t0

    # Storage chunks as the engine reads them: each twice (by the window that owns it
    # and by the task that cuts the halo strips of the windows before it), held here
    # from the first window that needs one to the last.
    y_edges = np.cumsum((0, *arr.chunks[0]))
    x_edges = np.cumsum((0, *arr.chunks[1]))
    readers = _detect._block_readers(arr, y_edges, x_edges)
    windows = _detect._walk(windows, (ny, nx))

    def chunks_of(w: Any) -> list[tuple[int, int]]:
        y0, y1, x0, x1 = w.region
        return _detect._blocks_of((y0, min(y1, ny), x0, min(x1, nx)), y_edges, x_edges)

    last_use = {ij: p for p, w in enumerate(windows) for ij in chunks_of(w)}
    held: dict[tuple[int, int], tuple[int, int, np.ndarray]] = {}
    n = 0
    for p, w in enumerate(windows):
        y0, y1, x0, x1 = w.region
        needed = chunks_of(w)
        with stage("read"):
            for ij in needed:
                if ij not in held:
                    readers[ij]()                 # the engine's other read of this chunk
                    held[ij] = (*readers[ij].origin, readers[ij]())
        with stage("cut tiles"):
            data = _detect._assemble([held[ij] for ij in needed],
                                     (y0, min(y1, ny), x0, min(x1, nx)))
        for ij in needed:
            if last_use[ij] == p:
                del held[ij]
        with stage("normalise"):
            buf = np.zeros(w.region_shape, np.float32)
            normalise(data, contract, out=buf[:data.shape[0], :data.shape[1]])
        parts = []
        for t in window_tiles(w, tile=cfg.tile, halo=cfg.halo, margin=cfg.margin, limit=limit,
                              stride=stride):
            with stage("cut tiles"):
                tile = np.ascontiguousarray(buf[t.region[0] - y0:t.region[1] - y0,
                                                t.region[2] - x0:t.region[3] - x0][None, None])
            with stage("ONNX Runtime"):
                grid = model.run(tile)
            gy0, gy1 = (t.core[0] - t.region[0]) // stride, (t.core[1] - t.region[0]) // stride
            gx0, gx1 = (t.core[2] - t.region[2]) // stride, (t.core[3] - t.region[2]) // stride
            with stage("decode"):
                parts.append(decode(grid[:, :, gy0:gy1, gx0:gx1], contract, threshold=threshold,
                                    origins=np.array([[t.core[2], t.core[0]]], np.float64)))
        dets = Detections.concat(parts)
        with stage("refine"):
            dets = refine_detections(dets, data, origin=(y0, x0))
        with stage("NMS"):
            dets = nms_detections(dets, iou_threshold=cfg.iou_threshold, kind=cfg.nms_kind)
        dets = owned(dets, owned_region(w, limit))
        if measure is not None and len(dets):
            with stage("measure"):
                dets = measure(dets, data, origin=(y0, x0))
        n += len(dets)

    total = sum(cpu.values())
    print(f"{args.image}: {ny} x {nx} px, {len(windows)} windows, {n} sources, "
          f"{total:.2f} CPU s on one thread")
    for stage, sec in sorted(cpu.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:13s} {sec:7.2f} s  {100 * sec / total:5.1f}%")
    model_s = cpu["ONNX Runtime"]
    print(f"  not the model: {total - model_s:.2f} s = {(total - model_s) / model_s:.2f}x "
          "the model's CPU time")


if __name__ == "__main__":
    main()
