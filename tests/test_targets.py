"""Training targets: truth boxes, selection, association, objectness, loss, augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scipy.signal import fftconvolve  # noqa: E402

from export._data import CutoutSampler, Field, FieldTruth, SelectionConfig, augment  # noqa: E402
from export._targets import (  # noqa: E402
    CutoutTruth,
    LossWeights,
    Targets,
    TargetSpec,
    _max_iou,
    build_targets,
    ellipse_boxes,
    gaussian_sizes,
    peak_snr,
    predicted_boxes,
    visible_extent,
    yolo_loss,
)
from export.model import DetectorConfig, YoloCianna  # noqa: E402
from export.onnx_export import build_contract  # noqa: E402
from streamdet.engine.decode import decode_params  # noqa: E402
from streamdet.errors import StreamdetValueError  # noqa: E402

PRIORS = ((6.0, 6.0), (12.0, 9.0), (9.0, 12.0), (24.0, 24.0))
CHANNELS = ("x", "y", "w", "h", "obj", "flux")


def _spec(**kw: object) -> TargetSpec:
    args: dict[str, object] = {"priors": PRIORS, "stride": 16, "box_channels": CHANNELS,
                               "param_channels": ("flux",)}
    args.update(kw)
    return TargetSpec(**args)  # type: ignore[arg-type]


def _truth(boxes: list[list[float]], *, selected: list[bool] | None = None,
           snr: list[float] | None = None, param: float = 0.25) -> CutoutTruth:
    n = len(boxes)
    return CutoutTruth(boxes=np.asarray(boxes, np.float64).reshape(n, 4),
                       selected=np.asarray(selected if selected is not None else [True] * n),
                       params=np.full((n, 1), param), param_weight=np.ones((n, 1)),
                       weight=np.ones(n), snr=np.asarray(snr if snr is not None else [10.0] * n,
                                                         np.float64))


def _far_predictions(b: int = 1, g: int = 4) -> np.ndarray:
    """Tiny predicted boxes far from everything (no overlap with any truth)."""
    out = np.zeros((b, len(PRIORS), g, g, 4))
    out[..., :] = [-100.0, -100.0, -99.0, -99.0]
    return out


# --------------------------------------------------------------------------- sources
def test_gaussian_sizes_use_the_scorer_factors() -> None:
    bmaj, bmin = gaussian_sizes(np.array([5.0, 2.0, 1.0, 3.0]), np.array([1.0, 1.0, 0.5, 4.0]),
                                np.array([1, 2, 3, 2]))
    # LAS x 2.355/5, Gaussian unchanged, exponential x sqrt(2); bmin > bmaj swapped
    np.testing.assert_allclose(bmaj, [2.355, 2.0, math.sqrt(2.0), 4.0])
    np.testing.assert_allclose(bmin, [0.471, 1.0, 0.5 * math.sqrt(2.0), 3.0])


def test_peak_snr_hand_values() -> None:
    beam, noise = 1.5, 1e-6
    # point source: peak = S x pb; a Gaussian as large as the beam: S / 2 (area doubles)
    snr = peak_snr(np.array([1e-5, 1e-5, 1e-5]), np.array([0.0, 1.5, 0.0]),
                   np.array([0.0, 1.5, 0.0]), np.array([0.0, 0.0, 0.8]),
                   np.array([0.5, 1.0, 1.0]), beam_arcsec=beam, noise=noise)
    np.testing.assert_allclose(snr, [5.0, 5.0, 8.0])  # last: the 80 % core dominates
    with pytest.raises(StreamdetValueError):
        peak_snr(np.ones(1), np.ones(1), np.ones(1), np.zeros(1), np.ones(1),
                 beam_arcsec=0.0, noise=1.0)


def test_peak_snr_matches_a_numerical_convolution() -> None:
    # elliptical Gaussian (FWHM 3" x 1.2", PA 30 deg) convolved with a 1.5" beam on a fine grid
    pix = 0.05  # arcsec
    n = 401
    c = np.arange(n) - n // 2
    yy, xx = np.meshgrid(c * pix, c * pix, indexing="ij")

    def gauss(fwhm_a: float, fwhm_b: float, phi: float) -> np.ndarray:
        sa, sb = fwhm_a / 2.3548200450309493, fwhm_b / 2.3548200450309493
        u = xx * math.cos(phi) + yy * math.sin(phi)
        v = -xx * math.sin(phi) + yy * math.cos(phi)
        g = np.exp(-0.5 * (u / sa) ** 2 - 0.5 * (v / sb) ** 2)
        return g / g.sum()

    flux, pb, noise = 2e-5, 0.7, 3e-7
    source = flux * gauss(3.0, 1.2, math.radians(30.0))  # Jy per fine pixel
    beam = gauss(1.5, 1.5, 0.0)
    beam_area = 1.0 / beam.max()  # fine pixels per beam
    image = pb * fftconvolve(source, beam, mode="same") * beam_area  # Jy/beam
    expected = image.max() / noise
    got = peak_snr(np.array([flux]), np.array([3.0]), np.array([1.2]), np.array([0.0]),
                   np.array([pb]), beam_arcsec=1.5, noise=noise)[0]
    assert got == pytest.approx(expected, rel=2e-3)


def test_ellipse_boxes_against_sampled_ellipses() -> None:
    rng = np.random.default_rng(3)
    major = rng.uniform(2, 30, 20)
    minor = major * rng.uniform(0.1, 1.0, 20)
    phi = rng.uniform(-np.pi, np.pi, 20)
    cx, cy = rng.uniform(0, 50, (2, 20))
    boxes = ellipse_boxes(cx, cy, major, minor, phi)
    t = np.linspace(0, 2 * np.pi, 20001)[:, None]
    px = cx + 0.5 * major * np.cos(t) * np.cos(phi) - 0.5 * minor * np.sin(t) * np.sin(phi)
    py = cy + 0.5 * major * np.cos(t) * np.sin(phi) + 0.5 * minor * np.sin(t) * np.cos(phi)
    ref = np.stack([px.min(0), py.min(0), px.max(0), py.max(0)], axis=1)
    np.testing.assert_allclose(boxes, ref, atol=1e-4)
    # axis-aligned cases by hand
    np.testing.assert_allclose(ellipse_boxes(np.array([0.0]), np.array([0.0]), np.array([10.0]),
                                             np.array([4.0]), np.array([np.pi / 2])),
                               [[-2.0, -5.0, 2.0, 5.0]], atol=1e-12)


def test_visible_extent_is_the_convolved_fwhm_times_the_factor() -> None:
    major, minor = visible_extent(np.array([2.0, 0.0]), np.array([0.0, 0.0]), beam_arcsec=1.5,
                                  pixel_arcsec=0.6, factor=2.0, min_px=6.0)
    np.testing.assert_allclose(major, [2.0 * 2.5 / 0.6, 6.0])  # sqrt(2^2 + 1.5^2) = 2.5
    np.testing.assert_allclose(minor, [6.0, 6.0])  # 2 x 1.5 / 0.6 = 5 < 6


# --------------------------------------------------------------------------- association
def test_one_source_shape_association_hand_case() -> None:
    spec = _spec()
    # truth centred at (20.3, 37.9), 11 x 8.5 px:
    # cell gx = floor(20.8 / 16) = 1, gy = floor(38.4 / 16) = 2
    truth = _truth([[20.3 - 5.5, 37.9 - 4.25, 20.3 + 5.5, 37.9 + 4.25]], param=0.3)
    pred = _far_predictions()
    pred[0, 1, 2, 1] = [15.0, 33.0, 27.0, 42.0]  # the 12x9 prior's current prediction
    t = build_targets(pred, [truth], spec, prediction_aware=False)
    assert t.n_pos == 1
    assert np.argwhere(t.pos).tolist() == [[0, 1, 2, 1]]  # 12x9 matches 11x8.5 best by shape
    np.testing.assert_allclose(t.xy[0, 1, :, 2, 1], [20.8 / 16 - 1, 38.4 / 16 - 2], atol=1e-6)
    np.testing.assert_allclose(t.wh[0, 1, :, 2, 1], [math.log(11 / 12), math.log(8.5 / 9)],
                               atol=1e-6)
    # DIoU by hand: intersection 10.8 x 8.35, union 108 + 93.5 - 90.18; centres (21, 37.5)
    # and (20.3, 37.9); enclosing box 12.2 x 9.15
    inter = 10.8 * 8.35
    iou = inter / (108.0 + 93.5 - inter)
    diou = iou - (0.7 ** 2 + 0.4 ** 2) / (12.2 ** 2 + 9.15 ** 2)
    assert t.obj[0, 1, 2, 1] == pytest.approx((1 + diou) / 2, abs=1e-6)
    assert t.params[0, 1, 0, 2, 1] == pytest.approx(0.3)
    assert t.obj_weight[0, 1, 2, 1] == spec.weights.obj
    # every other prior is a negative with the no-object weight and target 0
    others = ~t.pos
    assert np.all(t.obj[others] == 0) and np.all(t.obj_weight[others] == spec.weights.noobj)
    assert np.all(t.box_weight[others] == 0) and np.all(t.param_weight[others[:, :, None]
                                                                      .repeat(1, 2)] == 0)


def test_prediction_aware_association_and_one_target() -> None:
    spec = _spec(obj_target="one")
    box = [14.8, 33.65, 25.8, 42.15]
    truth = _truth([box])
    pred = _far_predictions()
    pred[0, 1, 2, 1] = [15.0, 33.0, 27.0, 42.0]
    pred[0, 3, 2, 1] = box  # the 24x24 prior already predicts the truth box exactly
    t = build_targets(pred, [truth], spec, prediction_aware=True)
    assert np.argwhere(t.pos).tolist() == [[0, 3, 2, 1]]
    assert t.obj[0, 3, 2, 1] == 1.0
    np.testing.assert_allclose(t.wh[0, 3, :, 2, 1], [math.log(11 / 24), math.log(8.5 / 24)],
                               atol=1e-6)
    # with DIoU targets the exact prediction gets (1 + 1) / 2 = 1 as well
    t2 = build_targets(pred, [truth], _spec(), prediction_aware=True)
    assert t2.obj[0, 3, 2, 1] == pytest.approx(1.0)


def test_sources_sharing_a_cell_get_distinct_priors_brightest_first() -> None:
    spec = _spec()
    small = [18.0, 18.0, 24.0, 24.0]  # 6x6, cell (1, 1)
    other = [19.0, 19.0, 25.0, 25.0]  # also 6x6, same cell
    truth = _truth([small, other], snr=[5.0, 50.0])
    t = build_targets(_far_predictions(), [truth], spec, prediction_aware=False)
    assert t.n_pos == 2
    # the brighter (second) source takes the 6x6 prior; the fainter the next best shape
    cell = t.pos[0, :, 1, 1]
    assert cell.tolist() == [True, True, False, False]
    np.testing.assert_allclose(t.xy[0, 0, :, 1, 1], [22.5 / 16 - 1, 22.5 / 16 - 1], atol=1e-9)
    np.testing.assert_allclose(t.xy[0, 1, :, 1, 1], [21.5 / 16 - 1, 21.5 / 16 - 1], atol=1e-9)
    # more sources than priors in one cell: the extra ones stay unassigned
    five = _truth([small] * 5, snr=[1.0, 2.0, 3.0, 4.0, 5.0])
    t5 = build_targets(_far_predictions(), [five], spec, prediction_aware=False)
    assert t5.n_pos == 4 and t5.n_unassigned == 1


def test_ignore_regions_and_unselected_sources() -> None:
    spec = _spec(ignore_iou=0.5)
    sel_box = [14.8, 33.65, 25.8, 42.15]
    unsel_box = [40.0, 2.0, 46.0, 8.0]
    truth = _truth([sel_box, unsel_box], selected=[True, False])
    pred = _far_predictions()
    pred[0, 0, 0, 0] = [14.8, 33.65, 25.8, 42.15]  # another cell predicts the selected source
    pred[0, 2, 0, 2] = [40.5, 2.0, 46.5, 8.0]  # IoU 5.5*6/(36+36-33) = 0.85 with the unselected
    pred[0, 1, 3, 3] = [40.0, 2.0, 52.0, 14.0]  # IoU 36/144 = 0.25: still a negative
    t = build_targets(pred, [truth], spec, prediction_aware=True)
    assert t.n_pos == 1  # the unselected source is no target
    assert t.obj_weight[0, 0, 0, 0] == 0 and t.obj_weight[0, 2, 0, 2] == 0
    assert t.obj_weight[0, 1, 3, 3] == spec.weights.noobj
    assert t.n_ignored == 2


def test_reinjection_of_confidently_found_unselected_sources() -> None:
    sel_box = [14.8, 33.65, 25.8, 42.15]
    unsel_box = [40.0, 2.0, 46.0, 8.0]          # centre (43, 5): cell (gy 0, gx 2)
    outside = [70.0, 20.0, 76.0, 26.0]          # centre x 73 > 64: outside the 4x4 grid
    truth = _truth([sel_box, unsel_box, outside], selected=[True, False, False],
                   snr=[10.0, 4.0, 4.0])
    pred = _far_predictions()
    pred[0, 2, 0, 2] = [40.5, 2.0, 46.5, 8.0]   # IoU 0.85 with the unselected source
    pred[0, 0, 1, 3] = [70.0, 20.0, 76.0, 26.0]  # the outside one, found exactly
    obj = np.full((1, len(PRIORS), 4, 4), 0.01)
    obj[0, 0, 1, 3] = 0.99

    def run(conf: float, reinject: float) -> Targets:
        o = obj.copy()
        o[0, 2, 0, 2] = conf
        return build_targets(pred, [truth], _spec(ignore_iou=0.5, reinject_obj=reinject),
                             prediction_aware=True, pred_obj=o)

    on = run(0.9, 0.5)
    assert on.n_reinjected == 1 and on.n_pos == 2
    assert on.pos[0, :, 0, 2].sum() == 1        # the re-injected source has its target
    k = int(np.flatnonzero(on.pos[0, :, 0, 2])[0])
    assert on.xy[0, k, 0, 0, 2] == pytest.approx((43.0 + 0.5) / 16 - 2)
    assert on.params[0, k, 0, 0, 2] == pytest.approx(0.25)
    for t in (run(0.3, 0.5), run(0.9, 0.0)):     # not confident enough, or switched off
        assert t.n_reinjected == 0 and t.n_pos == 1
        assert not t.pos[0, :, 0, 2].any() and t.obj_weight[0, 2, 0, 2] == 0  # ignored
    with pytest.raises(StreamdetValueError, match="reinject_obj"):
        _spec(reinject_obj=1.5)


def test_build_targets_rejects_mismatched_batches() -> None:
    with pytest.raises(StreamdetValueError):
        build_targets(_far_predictions(b=2), [_truth([])], _spec(), prediction_aware=True)
    with pytest.raises(StreamdetValueError):
        _spec(box_channels=("x", "y", "w", "h"))


# --------------------------------------------------------------------------- loss
def _raw_for(spec: TargetSpec, values: dict[str, float], g: int = 4) -> torch.Tensor:
    raw = torch.zeros(1, spec.nbox * spec.nch, g, g)
    for name, v in values.items():
        raw[0, spec.index(name)::spec.nch] = v
    return raw


def test_loss_matches_hand_formula() -> None:
    spec = _spec(weights=LossWeights(xy=2.0, wh=3.0, obj=1.5, noobj=0.5, param=4.0, prob=0.0))
    truth = _truth([[14.8, 33.65, 25.8, 42.15]], param=0.3)
    raw = _raw_for(spec, {"x": 0.2, "y": -0.1, "w": 0.3, "h": -0.2, "obj": -1.0, "flux": 0.5})
    act = YoloCianna(DetectorConfig(width=4, depth=0, priors=PRIORS, box_channels=CHANNELS)
                     ).activate(raw)
    t = build_targets(predicted_boxes(act.numpy(), spec), [truth], spec, prediction_aware=False)
    loss, parts = yolo_loss(raw, t, spec)

    def sig(v: float) -> float:
        return 1.0 / (1.0 + math.exp(-v))

    k, gy, gx = (int(i) for i in np.argwhere(t.pos[0])[0])
    xt, yt = t.xy[0, k, :, gy, gx]
    wt, ht = t.wh[0, k, :, gy, gx]
    size = [4.0 * math.tanh(0.3 / 4.0), 4.0 * math.tanh(-0.2 / 4.0)]
    xy = 2.0 * ((sig(0.2) - xt) ** 2 + (sig(-0.1) - yt) ** 2)
    wh = 3.0 * ((size[0] - wt) ** 2 + (size[1] - ht) ** 2)
    p = sig(-1.0)
    to = float(t.obj[0, k, gy, gx])
    bce_pos = -(to * math.log(p) + (1 - to) * math.log(1 - p))
    n_neg = spec.nbox * 16 - 1
    obj = 1.5 * bce_pos + 0.5 * n_neg * -math.log(1 - p)
    par = 4.0 * (sig(0.5) - 0.3) ** 2
    assert parts["xy"] == pytest.approx(xy, rel=1e-5)
    assert parts["wh"] == pytest.approx(wh, rel=1e-5)
    assert parts["obj"] == pytest.approx(obj, rel=1e-5)
    assert parts["param"] == pytest.approx(par, rel=1e-5)
    assert float(loss) == pytest.approx(xy + wh + obj + par, rel=1e-5)


def test_loss_minimum_reproduces_the_targets() -> None:
    spec = _spec()
    truth = _truth([[14.8, 33.65, 25.8, 42.15], [50.0, 3.0, 58.0, 13.0]], param=0.7)
    t = build_targets(_far_predictions(), [truth], spec, prediction_aware=False)
    raw = torch.zeros(1, spec.nbox * spec.nch, 4, 4, requires_grad=True)
    opt = torch.optim.Adam([raw], lr=0.1)
    for _ in range(300):
        loss, _ = yolo_loss(raw, t, spec)
        opt.zero_grad()
        loss.backward()
        opt.step()
    z = raw.detach().view(1, spec.nbox, spec.nch, 4, 4)
    pos = torch.from_numpy(t.pos)
    xy = torch.sigmoid(z[:, :, 0:2]).permute(0, 1, 3, 4, 2)[pos]
    np.testing.assert_allclose(xy.numpy(), t.xy.transpose(0, 1, 3, 4, 2)[t.pos], atol=2e-2)
    wh = (4.0 * torch.tanh(z[:, :, 2:4] / 4.0)).permute(0, 1, 3, 4, 2)[pos]
    np.testing.assert_allclose(wh.numpy(), t.wh.transpose(0, 1, 3, 4, 2)[t.pos], atol=2e-2)
    np.testing.assert_allclose(torch.sigmoid(z[:, :, 5])[pos].numpy(), 0.7, atol=2e-2)
    obj = torch.sigmoid(z[:, :, 4])
    np.testing.assert_allclose(obj[pos].numpy(), t.obj[t.pos], atol=3e-2)
    assert float(obj[~pos].max()) < 0.05


# --------------------------------------------------------------------------- augmentation
def _render(n: int, x: float, y: float, phi: float, a: float = 6.0, b: float = 2.0) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    u = (xx - x) * math.cos(phi) + (yy - y) * math.sin(phi)
    v = -(xx - x) * math.sin(phi) + (yy - y) * math.cos(phi)
    return np.exp(-0.5 * (u / a) ** 2 - 0.5 * (v / b) ** 2)


def _moments(img: np.ndarray) -> tuple[float, float, float]:
    """Centroid and major-axis angle (mod pi) from second moments."""
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]].astype(np.float64)
    w = img.astype(np.float64)
    s = w.sum()
    mx, my = (w * xx).sum() / s, (w * yy).sum() / s
    cxx = (w * (xx - mx) ** 2).sum() / s
    cyy = (w * (yy - my) ** 2).sum() / s
    cxy = (w * (xx - mx) * (yy - my)).sum() / s
    return mx, my, 0.5 * math.atan2(2 * cxy, cxx - cyy)


def _angle_diff(a: float, b: float) -> float:
    d = (a - b) % math.pi
    return min(d, math.pi - d)


@pytest.mark.parametrize("rot", [0, 1, 2, 3])
@pytest.mark.parametrize("flip_x", [False, True])
@pytest.mark.parametrize("flip_y", [False, True])
def test_augment_moves_points_and_turns_angles_with_the_pixels(rot: int, flip_x: bool,
                                                               flip_y: bool) -> None:
    n, x, y, phi = 96, 42.3, 50.6, math.radians(25.0)
    img = _render(n, x, y, phi)
    out, xo, yo, po = augment(img, np.array([x]), np.array([y]), np.array([phi]),
                              flip_x=flip_x, flip_y=flip_y, rot=rot)
    mx, my, angle = _moments(out)
    assert out.flags.c_contiguous
    assert (mx, my) == pytest.approx((xo[0], yo[0]), abs=1e-4)
    assert _angle_diff(angle, po[0]) < 1e-4


def test_cutout_pa_targets_follow_the_augmentation() -> None:
    # one elongated bright source in a synthetic field; its PA target must decode to the
    # orientation measured in the (augmented, normalised) cutout, minus 90 degrees
    n = 96
    phi = math.radians(35.0)
    pixels = 2e-5 * _render(n, 47.2, 45.7, phi, a=5.0, b=1.5)
    truth = FieldTruth(x=np.array([47.2]), y=np.array([45.7]), flux=np.array([1e-4]),
                       pb=np.array([0.8]), bmaj_g=np.array([6.0]), bmin_g=np.array([1.0]),
                       phi=np.array([phi]), core_frac=np.array([0.0]), snr=np.array([50.0]))
    field = Field(name="one", pixels=pixels, truth=truth, pixel_arcsec=0.6, beam_arcsec=1.5,
                  noise=1e-7, region=(0, n, 0, n))
    net = YoloCianna(DetectorConfig(width=4, depth=0))
    contract = build_contract(net, {})
    sampler = CutoutSampler([field], size=64, contract=contract, selection=SelectionConfig())
    for rot in range(4):
        for flips in ((False, False), (True, False), (False, True), (True, True)):
            img, ct = sampler.cutout(field, 16, 16, flip_x=flips[0], flip_y=flips[1], rot=rot)
            assert ct.selected.tolist() == [True]
            values = decode_params(ct.params, contract)[0]  # flux, bmaj, bmin, pa
            assert values[0] == pytest.approx(0.8e-4)  # apparent flux
            assert values[1:3] == pytest.approx([6.0, 1.0])
            _, _, angle = _moments(img)
            assert _angle_diff(math.radians(values[3] + 90.0), angle) < math.radians(0.5)
            box = ct.boxes[0]
            mx, my, _ = _moments(img)
            assert (0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])) == pytest.approx(
                (mx, my), abs=0.05)


def test_selection_by_peak_snr() -> None:
    # three point sources: peak SNR 2, 4.9 and 8 (S x pb / noise); snr_min 5 keeps the last
    noise = 1e-6
    flux = np.array([2e-6, 4.9e-6, 1e-5])
    pb = np.array([1.0, 1.0, 0.8])
    zeros = np.zeros(3)
    snr = peak_snr(flux, zeros, zeros, zeros, pb, beam_arcsec=1.5, noise=noise)
    np.testing.assert_allclose(snr, [2.0, 4.9, 8.0])
    truth = FieldTruth(x=np.array([10.0, 30.0, 50.0]), y=np.array([20.0, 20.0, 20.0]),
                       flux=flux, pb=pb, bmaj_g=zeros, bmin_g=zeros, phi=zeros, core_frac=zeros,
                       snr=snr)
    field = Field(name="sel", pixels=np.zeros((64, 64), np.float32), truth=truth,
                  pixel_arcsec=0.6, beam_arcsec=1.5, noise=noise, region=(0, 64, 0, 64))
    contract = build_contract(YoloCianna(DetectorConfig(width=4, depth=0)), {})
    sampler = CutoutSampler([field], size=64, contract=contract,
                            selection=SelectionConfig(snr_min=5.0))
    _, ct = sampler.cutout(field, 0, 0)
    # SNR 2 is below ignore_snr_min (3): background; SNR 4.9 defines an ignore region
    assert ct.selected.tolist() == [False, True]
    assert ct.boxes.shape == (2, 4)
    np.testing.assert_allclose(ct.snr, [4.9, 8.0])
    every = CutoutSampler([field], size=64, contract=contract,
                          selection=SelectionConfig(snr_min=5.0, ignore_snr_min=0.0))
    _, ct = every.cutout(field, 0, 0)
    assert ct.selected.tolist() == [False, False, True]
    assert ct.boxes.shape == (3, 4)


@pytest.mark.parametrize("block", [1, 3, 8, 64])
def test_blocked_max_iou_equals_the_dense_one(block: int) -> None:
    """Blocks compare predictions only with the truth boxes near them; the result is exact."""
    rng = np.random.default_rng(block)
    b_n, nbox, g = 4, 3, 12
    centre = rng.uniform(0, 8 * g, (b_n, nbox, g, g, 2))
    half = rng.uniform(1, 20, (b_n, nbox, g, g, 2))
    pred = np.concatenate([centre - half, centre + half], axis=-1).astype(np.float32)
    truths = []
    for n in (300, 0, 1, 40):
        c = rng.uniform(-10, 8 * g + 10, (n, 2))
        h = rng.uniform(0.5, 15, (n, 2))
        truths.append(np.concatenate([c - h, c + h], axis=1).astype(np.float32))
    truths[2] = pred[2, 0, 5, 5][None, :].copy()          # one box equal to a prediction
    got = _max_iou(pred, truths, block=block)
    flat = pred.reshape(b_n, -1, 4).astype(np.float64)
    for b, t in enumerate(truths):
        want = np.zeros(flat.shape[1])
        for i, p in enumerate(flat[b]):
            for q in t.astype(np.float64):
                iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
                ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
                inter = iw * ih
                union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
                want[i] = max(want[i], inter / union)
        np.testing.assert_allclose(got[b], want, rtol=1e-12, atol=1e-15)
    assert got[1].max() == 0.0
    assert got[2].reshape(nbox, g, g)[0, 5, 5] == pytest.approx(1.0)
