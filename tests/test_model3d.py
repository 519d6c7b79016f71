"""The 3D (HI cube) detector of ``export/``: shapes, targets, loss, ONNX export and contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from astropy.io import fits  # noqa: E402

from export._targets3d import (  # noqa: E402
    CubeTruth,
    Selection3D,
    Target3DSpec,
    box_iou3d,
    build_targets3d,
    cube_truth_from_table,
    decode3d,
    nms3d,
    truth_voxels,
    w20_channels,
    yolo_loss3d,
)
from export.model3d import (  # noqa: E402
    Detector3DConfig,
    YoloCianna3D,
    build_contract3d,
    export_onnx3d,
    load_checkpoint3d,
    save_checkpoint3d,
)
from export.train3d import CropSampler3D, SimCube, beam_noise, predict_cube  # noqa: E402
from streamdet.engine.contract import ModelContract, load_model  # noqa: E402
from streamdet.sim.simulate_cube import simulate_cube  # noqa: E402

TINY = Detector3DConfig(width=4, max_channels=8, depth=0)


def _tiny(seed: int = 0) -> YoloCianna3D:
    torch.manual_seed(seed)
    net = YoloCianna3D(TINY)
    net.eval()
    return net


def _spec(net: YoloCianna3D) -> Target3DSpec:
    return Target3DSpec(contract=build_contract3d(net), wh_bound=net.config.wh_bound)


def _truth(centres: list[tuple[float, float, float]], sizes: list[tuple[float, float, float]],
           params: list[list[float]], snr: float = 30.0) -> CubeTruth:
    c = np.asarray(centres, np.float64)
    s = np.asarray(sizes, np.float64)
    n = len(c)
    return CubeTruth(boxes=np.concatenate([c - s / 2, c + s / 2], axis=1),
                     params=np.asarray(params, np.float64), snr=np.full(n, snr),
                     pa_w=np.ones(n), flux=np.linspace(100.0, 10.0, n))


def test_forward_shape_stride_and_receptive_field() -> None:
    net = _tiny()
    assert net.config.stride == (16, 8, 8)
    x = torch.rand(2, 1, 64, 32, 24)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 13, 4, 4, 3)
    signed = net.config.box_channels.index("pa_cos")
    obj = net.config.box_channels.index("obj")
    assert float(y[:, obj].min()) >= 0.0 and float(y[:, obj].max()) <= 1.0
    assert float(y[:, signed].min()) >= -1.0
    rz, ry, rx = net.receptive_field
    assert rz > ry == rx > 16
    # locality: a voxel change moves only cells within the receptive field
    x2 = x.clone()
    x2[0, 0, 0, 0, 0] += 5.0
    with torch.no_grad():
        diff = (net(x2) - y).abs().sum(dim=(0, 1))
    nz, ny, _ = np.nonzero(diff.numpy() > 0)
    assert int(nz.max()) * 16 <= rz // 2 + 1 and int(ny.max()) * 8 <= ry // 2 + 1


def test_targets_decode_round_trip() -> None:
    net = _tiny()
    spec = _spec(net)
    c = spec.contract
    truth = _truth([(5.3, 20.9, 40.2), (17.0, 3.5, 2.0)], [(7.0, 5.0, 40.0), (4.0, 9.0, 18.0)],
                   [[50.0, 12.0, 300.0, 250.0, 60.0], [3.0, 4.0, 80.0, 10.0, 30.0]])
    grid = (4, 4, 3)
    tg = build_targets3d([truth], grid, spec, Selection3D())
    assert tg.pos.sum() == 2
    # an activated grid carrying exactly the targets decodes back to the truth
    g = np.zeros((len(c.box_channels), *grid), np.float64)
    for j, name in enumerate("xyz"):
        g[c.channel_index(name)] = tg.offset[0, j]
    for j, name in enumerate("whd"):
        g[c.channel_index(name)] = tg.t[0, j]
    for j, name in enumerate(c.param_channels):
        g[c.channel_index(name)] = tg.params[0, j]
    g[c.channel_index("obj")] = tg.pos[0]
    dec = decode3d(g, c, threshold=0.5)
    order = np.argsort(-dec["params"][:, 0])
    np.testing.assert_allclose(dec["boxes"][order], truth.boxes, atol=1e-5)
    np.testing.assert_allclose(dec["params"][order], truth.params, rtol=1e-6, atol=1e-6)
    # the origin shifts every box
    dec2 = decode3d(g, c, threshold=0.5, origin=(100.0, 200.0, 300.0))
    np.testing.assert_allclose(dec2["boxes"] - dec["boxes"],
                               np.tile([100.0, 200.0, 300.0], (2, 2)), atol=1e-9)
    # a faint galaxy is not a target and its cell carries no background loss
    faint = _truth([(12.0, 12.0, 30.0)], [(6.0, 6.0, 30.0)], [[5.0, 5.0, 100.0, 0.0, 45.0]],
                   snr=3.0)
    tf = build_targets3d([faint], grid, spec, Selection3D())
    assert tf.pos.sum() == 0 and tf.noobj.sum() == tf.noobj.size - 1


def test_truth_voxels_match_the_simulator(tmp_path: Path) -> None:
    path = tmp_path / "cube.fits"
    table = simulate_cube(path, shape=(512, 96, 96), seed=3, channel_offset=5000, noise=0.0)
    assert len(table) > 0
    header = fits.getheader(path)
    x, y, z = truth_voxels(table, header)
    np.testing.assert_allclose(x, table["x"], atol=1e-6)
    np.testing.assert_allclose(y, table["y"], atol=1e-6)
    np.testing.assert_allclose(z, table["channel"], atol=1e-6)
    c = build_contract3d(_tiny())
    ct = cube_truth_from_table(table, header, c, noise=30e-6)
    d = ct.boxes[:, 5] - ct.boxes[:, 2]
    wch = w20_channels(np.asarray(table["w20"]), np.asarray(table["central_freq"]), 30e3)
    np.testing.assert_allclose(d, np.maximum(wch, Selection3D().min_channels))
    assert np.all(ct.snr > 0) and ct.params.shape == (len(table), len(c.params))


def test_export_parity_and_contract(tmp_path: Path) -> None:
    net = _tiny(1)
    net.train()
    net(torch.rand(2, 1, 64, 32, 32))  # non-trivial batch-norm statistics
    net.eval()
    out = tmp_path / "m3d.onnx"
    spec = export_onnx3d(net, out, contract={"name": "tiny3d"})
    assert spec.ndim == 3 and spec.stride == (16, 8, 8) and spec.nbox == 1
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    doc = json.loads(meta["streamdet.contract"])
    assert doc["ndim"] == 3 and doc["input"]["layout"] == "NCDHW"
    assert doc["stride"] == [16, 8, 8] and len(doc["priors"][0]) == 3
    assert [p["name"] for p in doc["params"]] == ["line_flux_integral", "hi_size", "w20", "pa", "i"]
    assert ModelContract.from_metadata(meta).to_dict() == spec.to_dict()
    model = load_model(out, ndim=3, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).random((1, 1, 96, 40, 48)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.run(x), ref, atol=1e-4, rtol=1e-3)
    with pytest.raises(Exception, match="3D detector"):
        load_model(out, ndim=2, providers=["CPUExecutionProvider"])
    # a checkpoint exports to the same graph
    save_checkpoint3d(net, tmp_path / "m.pt", contract={"name": "tiny3d"})
    net2, stored = load_checkpoint3d(tmp_path / "m.pt")
    assert stored["name"] == "tiny3d"
    with torch.no_grad():
        np.testing.assert_allclose(net2(torch.from_numpy(x)).numpy(), ref, atol=1e-6)


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    net = YoloCianna3D(TINY)
    net.set_output_bias("obj", -3.0)
    spec = _spec(net)
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 0.05, (2, 1, 64, 32, 32)).astype(np.float32)
    truths = []
    for b, (cx, cy, cz) in enumerate([(10.0, 12.0, 20.0), (20.0, 25.0, 40.0)]):
        zz, yy, xx = np.mgrid[:64, :32, :32]
        x[b, 0] += np.exp(-0.5 * (((xx - cx) / 2) ** 2 + ((yy - cy) / 2) ** 2
                                  + ((zz - cz) / 8) ** 2)).astype(np.float32)
        truths.append(_truth([(cx, cy, cz)], [(8.0, 8.0, 32.0)], [[50.0, 10.0, 200.0, 90.0, 60.0]]))
    tg = build_targets3d(truths, (4, 4, 4), spec, Selection3D())
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt = torch.from_numpy(x)
    losses = []
    for _ in range(25):
        loss, parts = yolo_loss3d(net.raw(xt), tg, spec)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert set(parts) == {"xyz", "size", "obj", "noobj", "param"}
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


def test_nms3d_and_iou() -> None:
    boxes = np.array([[0, 0, 0, 4, 4, 8], [0.5, 0, 0, 4.5, 4, 8], [10, 10, 10, 12, 12, 12.0]])
    iou = box_iou3d(boxes, boxes)
    np.testing.assert_allclose(np.diag(iou), 1.0)
    assert iou[0, 1] == pytest.approx(3.5 / 4.5)
    assert list(nms3d(boxes, np.array([0.5, 0.9, 0.1]), 0.5)) == [1, 2]


def test_sampler_flips_move_the_truth_with_the_signal() -> None:
    net = _tiny()
    c = build_contract3d(net)
    data = np.zeros((128, 64, 64), np.float16)
    data[40:44, 10:12, 50:52] = 500.0   # a bright block centred on (50.5, 10.5, 41.5)
    truth = _truth([(50.5, 10.5, 41.5)], [(6.0, 6.0, 20.0)], [[50.0, 10.0, 200.0, 30.0, 60.0]])
    cube = SimCube(data=data, noise=30e-6, header=fits.Header(), truth=truth)
    sampler = CropSampler3D([cube], crop=(64, 32, 32), contract=c, selection=Selection3D(),
                            p_galaxy=1.0)
    rng = np.random.default_rng(1)
    pas = set()
    for _ in range(12):
        xs, trs = sampler.sample(rng, 1)
        assert len(trs[0]) == 1
        z, y, x = np.unravel_index(int(np.argmax(xs[0, 0])), xs.shape[2:])
        bx = trs[0].boxes[0]
        assert bx[0] <= x <= bx[3] and bx[1] <= y <= bx[4] and bx[2] <= z <= bx[5]
        pas.add(round(float(trs[0].params[0, 3])) % 360)
    assert pas <= {30, 330, 150, 210} and len(pas) > 1
    n = beam_noise(rng, (32, 64, 64), beam_sigma_px=1.06)
    assert abs(float(n.std()) - 1.0) < 0.05


def test_predict_cube_does_not_depend_on_the_window() -> None:
    net = _tiny(3)
    c = build_contract3d(net)
    rng = np.random.default_rng(4)
    cube = rng.normal(0.0, 30e-6, (192, 64, 72)).astype(np.float32)
    whole = predict_cube(net, cube, c, window=(192, 64, 72), threshold=0.0, iou=1.0)
    small = predict_cube(net, cube, c, window=(64, 32, 24), threshold=0.0, iou=1.0)
    assert len(whole["obj"]) == 12 * 8 * 9 == len(small["obj"])

    def key(d: dict[str, np.ndarray]) -> np.ndarray:
        return d["boxes"][np.lexsort(d["boxes"].T[::-1])]

    np.testing.assert_allclose(key(small), key(whole), atol=1e-4)


def test_the_sdc2_config_reads() -> None:
    from export.train3d import load_train3d_config

    cfg = load_train3d_config(Path(__file__).parents[1] / "configs" / "sdc2.json")
    assert cfg.crop == (256, 64, 64) and cfg.cube_shape == (1024, 512, 512)
    net = YoloCianna3D(Detector3DConfig.from_dict(cfg.network))
    assert net.config.stride == (16, 8, 8)
    assert Detector3DConfig.from_dict(net.config.to_dict()) == net.config
