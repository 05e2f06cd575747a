"""Anatomy per clinical group: what is where, how echogenic it is, and what the labels are.

Each builder draws one scene from an RNG and returns a `Scene`: the probe,
the scanner settings, a tissue function (echogenicity and attenuation at any
point, evaluated on the beam grid) and the label geometry (segmentation map
at any point, class, keypoints). Echogenicity is relative to soft tissue
(1.0); fluid is ~0.001 (black), specular walls and bone 20-60 (white);
attenuation is in nepers per image height, bone and calcium shadow with
50-300, fluid enhances what lies behind it with ~0.1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from usagg.data.synth.bmode import TISSUE_ATTENUATION, Imaging, Probe, TissueFn
from usagg.data.synth.shapes import Blob, harmonics, smooth_field, wavy

LabelFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Scene:
    """One drawn anatomy: image physics inputs plus exact label geometry (image units, [0, 1]^2)."""

    probe: Probe
    imaging: Imaging
    tissue: TissueFn
    labels: LabelFn  # segmentation class at points (uint8)
    cls: int = 0
    keypoints: tuple[tuple[float, float], ...] = ()


class _Paint:
    """Echogenicity and attenuation maps painted back to front."""

    def __init__(self, shape: tuple[int, ...], echo: float | np.ndarray = 1.0) -> None:
        self.echo = np.empty(shape, np.float32)
        self.echo[...] = echo
        self.att = np.full(shape, TISSUE_ATTENUATION, np.float32)

    def put(self, mask: np.ndarray, echo: float | np.ndarray, att: float | np.ndarray | None = None) -> None:
        np.copyto(self.echo, np.broadcast_to(np.asarray(echo, np.float32), mask.shape), where=mask)
        if att is not None:
            np.copyto(self.att, np.broadcast_to(np.asarray(att, np.float32), mask.shape), where=mask)


def _circle(cx: float, cy: float, r: float) -> Blob:
    """A round blob: both semi-axes r."""
    return Blob(cx, cy, r, r)


def _fits(probe: Probe, blobs: list[Blob], margin: float, scale: float = 1.0) -> bool:
    return all(bool(probe.in_view(*b.boundary(64, scale), margin=margin).all()) for b in blobs)


def _sector(rng: np.random.Generator, r_min: tuple[float, float], half_angle: tuple[float, float]) -> Probe:
    r0 = rng.uniform(*r_min)
    apex_y = -r0 + 0.004
    return Probe("sector", apex_y=apex_y, r_min=r0, r_max=0.995 - apex_y, half_angle=rng.uniform(*half_angle))


def _striations(x: np.ndarray, y: np.ndarray, freq: float, phase: float) -> np.ndarray:
    """Bright, slightly wavy fibre lines of muscle (1 on a line, 0 elsewhere)."""
    return (np.sin(freq * y + 4 * np.sin(5 * x + phase)) > 0.75).astype(np.float32)


# ---------------------------------------------------------------- fetal head (transthalamic plane)


def fetal(rng: np.random.Generator, direction_class: int | None = None) -> Scene:
    """Fetal head in amniotic fluid, curvilinear probe. Class: quadrant the face points to (right/down/left/up).

    Keypoints: biparietal diameter ends (minor-axis ends of the outer skull
    ellipse); point 1 lies 90 degrees clockwise on screen from the face
    direction, point 2 opposite, so the order is anatomical, not positional.

    The class is made learnable by a tiny ViT at 64 px from ~160 images: the head sits 0.1-0.2 of the
    image off centre towards its face and the body always trails behind it, so which sector border the
    bright skull abuts (and which the fluid and body do) codes the direction in local patches.
    """
    probe = _sector(rng, (0.12, 0.2), (0.5, 0.62))
    wall = wavy(rng, rng.uniform(0.1, 0.17), 0.015)
    back = wavy(rng, rng.uniform(0.86, 0.96), 0.03)
    fascia = float(rng.uniform(0.3, 0.6))
    direction = rng.integers(0, 4) if direction_class is None else direction_class
    psi = direction * np.pi / 2 + rng.uniform(-0.6, 0.6)
    a = rng.uniform(0.17, 0.25)
    b = a * rng.uniform(0.74, 0.86)
    skull_t = rng.uniform(0.06, 0.09)
    face = np.array([np.cos(psi), np.sin(psi)])
    head = Blob(0.5, 0.5, a, b, psi)
    for attempt in range(60):
        if attempt and attempt % 15 == 0:
            a, b = a * 0.92, b * 0.92
        # off centre towards the face (see the docstring), jittered across it
        along, across = rng.uniform(0.1, 0.2), rng.uniform(-0.06, 0.06)
        cx, cy = np.array([0.5, 0.55]) + along * face + across * np.array([-face[1], face[0]])
        head = Blob(cx, cy, a, b, psi)
        bx, by = head.boundary(64)
        if _fits(probe, [head], 0.025) and bool((by > wall(bx) + 0.06).all()) and bool((by < back(bx)).all()):
            break
    d = a * rng.uniform(1.5, 1.9)
    body = Blob(head.cx - d * face[0], head.cy - d * face[1], a * 1.1, b * 0.9, psi + rng.uniform(-0.5, 0.5))
    brain_tex = smooth_field(rng, 10, 0.3)
    tissue_tex = smooth_field(rng, 8, 0.4)
    csp_u = float(rng.uniform(0.3, 0.42))

    def tissue(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = _Paint(x.shape, 0.9 * tissue_tex(x, y))
        w = wall(x)
        p.put(np.abs(y - w * fascia) < 0.006, 5.0)
        p.put((y > w) & (y < w + 0.045), 1.5 * tissue_tex(y, x))
        p.put(y >= w + 0.045, 0.001, 1.0)  # amniotic fluid (TGC is set for it: little enhancement)
        p.put(y >= back(x), 1.2 * tissue_tex(y, x), TISSUE_ATTENUATION)
        p.put(body.inside(x, y), 0.8 * tissue_tex(x, y), TISSUE_ATTENUATION)
        r = head.rho(x, y)
        u, v = head.local(x, y)
        u, v = u / a, v / b
        p.put(r <= 1, 28.0, 45.0)  # skull: specular and shadowing
        inner = r <= 1 - skull_t
        p.put(inner, 0.3 * brain_tex(x, y), 1.2)
        p.put(inner & (np.abs(v) < 0.035) & (r < 0.85), 4.0)  # falx / midline echo
        for s in (-1, 1):
            p.put(inner & (np.hypot((u + 0.08) / 0.17, (v - s * 0.2) / 0.15) < 1), 0.05)  # thalami
            p.put(inner & (np.hypot((u + 0.55) / 0.16, (v - s * 0.32) / 0.13) < 1), 3.0)  # choroid plexus
        p.put(inner & (np.abs(u - csp_u) < 0.13) & (np.abs(v) < 0.11), 0.002, 0.2)  # cavum septi pellucidi
        return p.echo, p.att

    def labels(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return head.inside(x, y).astype(np.uint8)

    return Scene(
        probe,
        Imaging.random(rng),
        tissue,
        labels,
        cls=int(direction),
        keypoints=(head.point(0.0, b), head.point(0.0, -b)),
    )


# ---------------------------------------------------------------- thyroid (transverse, linear probe)


def thyroid(rng: np.random.Generator) -> Scene:
    """Thyroid lobe with one nodule; class 1 (malignant) makes irregular, hypoechoic, calcified nodules likely.

    The class cue is large on purpose (a tiny ViT learns it from ~80 images at 64 px): nodules fill a good part
    of the lobe, a malignant one is dark and casts a posterior shadow down to the image's bottom (dark, speckle-
    free patches), a benign one is iso- to hyperechoic, often haloed or partly cystic, and casts none.
    """
    probe = Probe("linear")
    malignant = int(rng.random() < 0.5)
    irregular, hypo, calcified = rng.random(3) < (np.array([0.85, 0.95, 0.8]) if malignant else [0.1, 0.05, 0.03])
    shadowing = malignant and rng.random() < 0.9
    skin = float(rng.uniform(0.018, 0.03))
    fat = wavy(rng, rng.uniform(0.06, 0.09), 0.01)
    muscle = wavy(rng, rng.uniform(0.17, 0.24), 0.02)
    deep = wavy(rng, rng.uniform(0.8, 0.88), 0.02)
    lobe = Blob(rng.uniform(0.42, 0.58), rng.uniform(0.46, 0.54), rng.uniform(0.32, 0.42), rng.uniform(0.2, 0.25))
    side = rng.choice([-1, 1])
    carotid = _circle(0.5 + side * rng.uniform(0.36, 0.42), rng.uniform(0.5, 0.58), rng.uniform(0.07, 0.09))
    trachea = _circle(0.5 - side * rng.uniform(0.5, 0.56), rng.uniform(0.36, 0.42), rng.uniform(0.15, 0.18))
    size = rng.uniform(0.11, 0.17)
    aspect = rng.uniform(0.85, 1.3) if malignant else rng.uniform(0.6, 0.9)
    margin = (
        harmonics(rng, rng.uniform(0.18, 0.32), (4, 12)) if irregular else harmonics(rng, rng.uniform(0, 0.05), (2, 3))
    )
    nodule = Blob(0.5, 0.5, size, size * aspect, np.pi / 2 * (aspect > 1) + rng.uniform(-0.2, 0.2), margin)
    for attempt in range(60):
        if attempt and attempt % 15 == 0:
            size *= 0.9
        cu, cv = rng.uniform(-0.5, 0.5) * lobe.a, rng.uniform(-0.35, 0.35) * lobe.b
        nodule = Blob(*lobe.point(cu, cv), size, size * aspect, nodule.angle, margin)
        if _fits(probe, [nodule], 0.03):
            break
    echo = float(rng.uniform(0.12, 0.3) if hypo else rng.uniform(1.4, 2.6))
    att = float(rng.uniform(9, 15)) if shadowing else (2.0 if hypo else TISSUE_ATTENUATION)
    halo = (not hypo) and rng.random() < 0.7
    cyst = None
    if not malignant and rng.random() < 0.5:
        cyst = Blob(*nodule.point(rng.uniform(-0.3, 0.3) * size, 0), size * 0.45, size * 0.35, rng.uniform(0, np.pi))
    calcs = np.zeros((0, 3))
    if calcified:
        n = int(rng.integers(3, 8))
        ang, rad = rng.uniform(0, 2 * np.pi, n), np.sqrt(rng.uniform(0, 0.55, n))
        pts = [nodule.point(r * np.cos(t) * nodule.a, r * np.sin(t) * nodule.b) for r, t in zip(rad, ang, strict=True)]
        calcs = np.array([(px, py, rng.uniform(0.006, 0.01)) for px, py in pts])
    tex = smooth_field(rng, 14, 0.22)
    muscle_tex = smooth_field(rng, 6, 0.3)
    phase = rng.uniform(0, 6)

    def tissue(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = _Paint(x.shape, 0.55 * muscle_tex(x, y))
        p.put(y < skin, 3.5)
        fat_y = fat(x)
        p.put((y >= skin) & (y < fat_y), 0.45)
        strap = (y >= fat_y) & (y < muscle(x))
        p.put(strap, 0.3 + 0.9 * _striations(x, y, 160, phase))
        p.put(y >= deep(x), 0.4 + 0.8 * _striations(x, y, 120, phase + 1))
        rl = lobe.rho(x, y)
        p.put(rl < 1.05, 3.0)  # capsule
        p.put(rl < 1, 1.5 * tex(x, y))
        rc = carotid.rho(x, y)
        p.put(rc < 1.18, 3.5)
        p.put(rc < 1, 0.0008, 0.1)
        rt = trachea.rho(x, y)
        p.put((rt < 1) & (rt > 0.93) & (y < trachea.cy), 40.0, 400.0)  # air wall: total shadow below
        p.put((rt <= 0.93) & (y < trachea.cy + 0.05), 0.3, 60.0)
        rn = nodule.rho(x, y)
        p.put(rn <= 1, echo * tex(y, x), att)
        if halo:
            p.put((rn <= 1) & (rn > 0.86), 0.12)
        if cyst is not None:
            p.put(cyst.inside(x, y) & (rn < 0.9), 0.001, 0.1)
        for cx, cy, r in calcs:
            p.put(np.hypot(x - cx, y - cy) < r, 60.0, 220.0)
        return p.echo, p.att

    def labels(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return nodule.inside(x, y).astype(np.uint8)

    return Scene(probe, Imaging.random(rng), tissue, labels, cls=malignant)


# ---------------------------------------------------------------- breast (linear probe)


def breast(rng: np.random.Generator) -> Scene:
    """Breast layers with one lesion; malignant: irregular, near black, posterior shadowing (BI-RADS cues).

    The cues are strong and large on purpose (the demo trains this class on 40 images): lesions are big; a
    malignant one is near black and nearly always shadows the whole column beneath it, while a benign one is a
    wide, smooth, moderately hypoechoic fibroadenoma (rarely a cyst) that lets sound through: the column
    beneath it is brighter than the tissue beside it (posterior enhancement). A dark column against a bright
    one below the lesion codes the class in many patches, which a bag of local features can learn.
    """
    probe = Probe("linear")
    malignant = int(rng.random() < 0.5)
    irregular, taller, shadow = rng.random(3) < (np.array([0.9, 0.3, 0.97]) if malignant else [0.05, 0.05, 0.03])
    skin = float(rng.uniform(0.02, 0.03))
    gland_top = wavy(rng, rng.uniform(0.17, 0.25), 0.03)
    gland_bottom = wavy(rng, rng.uniform(0.58, 0.66), 0.04)
    pec = wavy(rng, rng.uniform(0.7, 0.76), 0.02)
    rib = None
    if rng.random() < 0.2:  # rare: its shadow would mimic a malignant one
        rib = Blob(rng.uniform(0.2, 0.8), rng.uniform(0.88, 0.92), rng.uniform(0.1, 0.14), rng.uniform(0.045, 0.06))
    size = rng.uniform(0.15, 0.21) if malignant else rng.uniform(0.12, 0.18)
    if taller:
        a, b, angle = size, size / rng.uniform(1.15, 1.6), np.pi / 2 + rng.uniform(-0.3, 0.3)
    else:
        a, b, angle = size, size / rng.uniform(1.4, 2.2), rng.uniform(-0.2, 0.2)
    margin = (
        harmonics(rng, rng.uniform(0.2, 0.35), (5, 14)) if irregular else harmonics(rng, rng.uniform(0, 0.04), (2, 3))
    )
    lesion = Blob(0.5, 0.4, a, b, angle, margin)
    for attempt in range(60):
        if attempt and attempt % 15 == 0:
            a, b = a * 0.9, b * 0.9
        lesion = Blob(rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.55), a, b, angle, margin)
        if _fits(probe, [lesion], 0.03):
            break
    cyst = (not malignant) and rng.random() < 0.15
    echo = 0.002 if cyst else float(rng.uniform(0.02, 0.06) if malignant else rng.uniform(0.25, 0.5))
    att = float(rng.uniform(12, 18)) if shadow else float(rng.uniform(0.02, 0.2))
    halo = malignant and rng.random() < 0.7
    fat_tex = smooth_field(rng, 10, 0.6)
    gland_tex = smooth_field(rng, 14, 0.5)
    lig_f, lig_p = rng.uniform(6, 10), rng.uniform(0, 6)
    phase = rng.uniform(0, 6)

    def tissue(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = _Paint(x.shape, 0.6 + 0.9 * _striations(x, y, 140, phase))  # pectoralis
        p.put(y < pec(x), 0.35 * fat_tex(y, x))  # retromammary fat
        p.put(y < gland_bottom(x), 1.6 * gland_tex(x, y))
        fat = (y >= skin) & (y < gland_top(x))
        p.put(fat, 0.3 * fat_tex(x, y))
        p.put(fat & (np.abs(np.sin(lig_f * 2 * np.pi * x + 14 * y + lig_p)) < 0.05), 2.5)  # Cooper's ligaments
        p.put(y < skin, 3.0)
        if rib is not None:
            rr = rib.rho(x, y)
            p.put((rr < 1) & (rr > 0.8) & (y < rib.cy), 30.0, 250.0)
            p.put((rr <= 0.8) & (y < rib.cy), 0.5, 120.0)
        rl = lesion.rho(x, y)
        if halo:
            p.put((rl > 1) & (rl < 1.15), 2.6)
        p.put(rl <= 1, echo * gland_tex(y, x) if not cyst else echo, att)
        return p.echo, p.att

    def labels(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return lesion.inside(x, y).astype(np.uint8)

    return Scene(probe, Imaging.random(rng), tissue, labels, cls=malignant)


# ---------------------------------------------------------------- cardiac (apical four-chamber, phased array)


def cardiac(rng: np.random.Generator) -> Scene:
    """Apical four-chamber view: LV (1), LA (2), RV (3) labelled; the right atrium is drawn but unlabelled."""
    probe = Probe(
        "sector", apex_y=-0.02, r_min=0.03, r_max=1.0, half_angle=rng.uniform(0.66, 0.78)
    )  # phased array: near-point apex
    scale = 1.0
    for attempt in range(60):
        if attempt and attempt % 15 == 0:
            scale *= 0.93
        beta = np.pi / 2 + rng.uniform(-0.14, 0.14)
        apex = Blob(0.5 + rng.uniform(-0.05, 0.05), rng.uniform(0.09, 0.14), 1, 1, beta)
        ll = rng.uniform(0.7, 0.8) * scale
        lv_b, rv_b = rng.uniform(0.085, 0.105) * scale, rng.uniform(0.065, 0.085) * scale
        lv = Blob(*apex.point(0.36 * ll, -0.11 * scale), 0.28 * ll, lv_b, beta, harmonics(rng, 0.03, (2, 3)))
        rv = Blob(*apex.point(0.42 * ll, 0.1 * scale + rv_b), 0.22 * ll, rv_b, beta + 0.1, harmonics(rng, 0.04, (2, 3)))
        la_a = rng.uniform(0.09, 0.12) * scale
        la = Blob(*apex.point(0.36 * ll + 0.28 * ll + 0.045 * scale + la_a, -0.1 * scale), la_a, 0.09 * scale, beta)
        ra = Blob(*apex.point(0.68 * ll + 0.04 * scale + la_a, 0.1 * scale + rv_b), la_a * 0.9, 0.08 * scale, beta)
        if _fits(probe, [lv, rv, la], 0.01, 1.1):
            break
    walls = ((lv, 1.5), (rv, 1.35), (la, 1.3), (ra, 1.3))
    tex = smooth_field(rng, 6, 0.8)
    myo_tex = smooth_field(rng, 12, 0.3)
    mv_u = lv.a * 1.0 + 0.022 * scale

    def tissue(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        clutter = 1.8 * np.exp(-np.hypot(x - 0.5, y) / 0.08)
        p = _Paint(x.shape, 0.25 * tex(x, y) + clutter)
        m = np.min(np.stack([c.rho(x, y) / w for c, w in walls]), axis=0)
        p.put(m < 1.12, 3.5)  # pericardium
        p.put(m < 1, 1.0 * myo_tex(x, y) + clutter)
        for chamber in (lv, rv, la, ra):
            p.put(chamber.inside(x, y), 0.002 + 0.5 * clutter, 0.1)
        u, v = lv.local(x, y)
        p.put((np.abs(u - mv_u) < 0.01) & (np.abs(v) > 0.25 * lv.b) & (np.abs(v) < lv.b), 3.0)  # mitral leaflets
        return p.echo, p.att

    def labels(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y)), np.uint8)
        for cls, chamber in ((3, rv), (2, la), (1, lv)):
            out[chamber.inside(x, y)] = cls
        return out

    return Scene(probe, Imaging.random(rng, lateral_far_px=rng.uniform(2.2, 3.2)), tissue, labels)


#: Anatomy name (SynthTask.anatomy) -> scene builder.
SCENES: dict[str, Callable[..., Scene]] = {"fetal": fetal, "thyroid": thyroid, "breast": breast, "cardiac": cardiac}
