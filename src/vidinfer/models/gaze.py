"""Built-in ``gaze`` (gaze-detection): faces, their 6 landmarks, and where each head points.

Four steps, all offline, all Google MediaPipe models (Apache-2.0):

1. BlazeFace full-range (``face_detection_full_range_sparse.tflite``) finds faces
   and 6 keypoints (right eye, left eye, nose tip, mouth, right ear, left ear;
   "right" is the person's own right). The hosted API's gaze model uses the same
   MediaPipe face detector, so the 6 landmarks mean the same there and here.
2. The face mesh model (``face_landmark.tflite``) places 468 landmarks on each
   face, on a crop rotated upright by the eyes (as MediaPipe does).
3. ``cv2.solvePnP`` fits MediaPipe's canonical face model (the 3D positions of
   the same landmarks, in cm) to 33 rigid landmarks: the head's rotation. The
   generic 6-point head models found in tutorials do not match where the mesh
   model puts its points and gave a +33 degree pitch bias on frontal faces;
   the canonical model is what the mesh was made on.
4. The iris model (``iris_landmark.tflite``) finds each iris centre on a 64x64
   crop of the eye, 2.3x its corner-to-corner width, eye corners level, the
   person's left eye mirrored (as MediaPipe's iris graph does; [0, 1] input).
   The iris's offset from the middle of the eye corners, over the eye's width,
   turns into an eye-in-head angle with a simple eyeball: the iris centre moves
   on a sphere of radius ``EYEBALL_RADIUS`` x the eye's width (about 12 mm for
   a 30 mm wide eye), so ``angle = asin(offset / radius)``. Those angles, the
   mean over the open eyes, are added to the head's yaw and pitch.

Yaw and pitch are of where the eyes look (step 4) when they can be seen, else of
the face's forward direction (``gaze_source`` says which), in radians, with the
convention used to draw the hosted API's gaze arrows: from the face centre, the
arrow goes to ``(x - L*sin(yaw)*cos(pitch), y - L*sin(pitch))`` in image pixels.
So ``yaw > 0``: the person looks towards the image's left (their own right);
``pitch > 0``: they look up; both 0: straight at the camera. The eyes count as
unseen (head pose only) when the head is turned more than ``MAX_HEAD_TURN``,
when an eye is narrower than ``MIN_EYE_WIDTH`` pixels (a small face),
when an eye's lids are less than ``MIN_OPENNESS`` of its width apart (closed),
when the iris is not darker than the white of the eye beside it (covered: the
models still place an iris there) or when the iris model puts it outside the eye.

The ``.tflite`` files come from the ``mediapipe==0.10.21`` wheel, the last one
that ships them, installed with ``pip install --no-deps mediapipe==0.10.21``
(mediapipe's own dependencies pin numpy<2 and pull ~1 GB; vidinfer never
imports mediapipe, it only reads the files). The canonical coordinates below
are copied from ``geometry_pipeline_metadata_landmarks.binarypb`` in the npm
package ``@mediapipe/face_mesh`` 0.4.1657299874 (Apache-2.0), the Python wheels
do not ship it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from vidinfer.core.model import InferenceParams, ModelInfo
from vidinfer.core.results import Gazes
from vidinfer.models.tflite import TFLiteModel, package_file

PACKAGE = "mediapipe"
INSTALL_HINT = "install mediapipe's model files with: pip install --no-deps mediapipe==0.10.21"
DETECTOR = "modules/face_detection/face_detection_full_range_sparse.tflite"
MESH = "modules/face_landmark/face_landmark.tflite"
IRIS = "modules/iris_landmark/iris_landmark.tflite"
DETECT_SIZE = 192
MESH_SIZE = 192
#: frames larger than this (long side) are scaled down: the mesh crop needs no more
MAX_SIDE = 1280
NMS_IOU = 0.3
#: the mesh crop is this much larger than the detector's box (MediaPipe's value)
CROP_SCALE = 1.5
#: below this the mesh model says "no face in this crop"
FACE_PRESENCE = 0.5
EYE_SIZE = 64
#: the eye crop is this much wider than the eye corners are apart (MediaPipe's value)
EYE_CROP_SCALE = 2.3
#: mesh landmarks per eye: its two corners (left to right in the image), and whether the crop is
#: mirrored (the iris model knows the person's right eye only)
EYES = ((33, 133, False), (362, 263, True))
#: radius the iris centre turns on, over the eye's corner-to-corner width (~12 mm / ~30 mm)
EYEBALL_RADIUS = 0.4
#: lids closer than this (over the eye's width) = closed: that eye is not used (open eyes: ~0.35)
MIN_OPENNESS = 0.15
#: an iris less than this much darker than the white beside it is not seen (covered; open: ~0.6)
MIN_IRIS_CONTRAST = 0.25
#: an iris further than this from the eye's middle (over its width) is a miss
MAX_IRIS_OFFSET = 0.4
#: eyes narrower than this (pixels, corner to corner) are not used: a pixel of iris error there is ~20 degrees
MIN_EYE_WIDTH = 8.0
#: beyond this head yaw or pitch the far eye hides and the near one foreshortens: head pose only
MAX_HEAD_TURN = math.radians(60)

#: MediaPipe's canonical face model (cm; x to the face's left, y up, z out of the face)
#: for the 33 landmarks of its Procrustes basis: rigid points, no mouth or jaw
CANONICAL = {
    4: (0.000000, -0.463170, 7.586580), 6: (0.000000, 2.473255, 5.788627), 10: (0.000000, 8.261778, 4.481535),
    33: (-4.445859, 2.663991, 3.173422), 54: (-6.279331, 6.615427, 1.425850), 67: (-3.523964, 8.005976, 3.729163),
    117: (-5.258659, 0.945811, 2.974312), 119: (-3.300681, 0.861641, 3.872784), 121: (-1.820731, 1.467954, 4.224124),
    127: (-7.743095, 2.364999, -2.005167), 129: (-1.785794, -0.978284, 4.850470),
    132: (-7.270895, -2.890917, -2.252455), 133: (-1.856432, 2.585245, 3.757904),
    136: (-5.085276, -7.178590, 0.714711), 143: (-6.407571, 2.236021, 1.560843),
    147: (-6.234883, -1.944430, 1.663542), 198: (-1.246815, 0.230297, 5.681036),
    205: (-3.832928, -1.537326, 4.137731),
    263: (4.445859, 2.663991, 3.173422), 284: (6.279331, 6.615427, 1.425850), 297: (3.523964, 8.005976, 3.729163),
    346: (5.258659, 0.945811, 2.974312), 348: (3.300681, 0.861641, 3.872784), 350: (1.820731, 1.467954, 4.224124),
    356: (7.743095, 2.364999, -2.005167), 358: (1.785794, -0.978284, 4.850470), 361: (7.270895, -2.890917, -2.252455),
    362: (1.856432, 2.585245, 3.757904), 365: (5.085276, -7.178590, 0.714711), 372: (6.407571, 2.236021, 1.560843),
    376: (6.234883, -1.944430, 1.663542), 420: (1.246815, 0.230297, 5.681036), 425: (3.832928, -1.537326, 4.137731),
}
_MESH_IDS = np.array(list(CANONICAL), dtype=np.int64)
#: in OpenCV's camera axes (x right, y down, z away from the camera) a frontal face has R = I
_MODEL_POINTS = np.array(list(CANONICAL.values()), dtype=np.float64) * np.array([1.0, -1.0, -1.0])

INFO = ModelInfo(
    name="gaze",
    task="gaze-detection",
    classes=("face",),
    input_size=(DETECT_SIZE, DETECT_SIZE),
    source="PyPI mediapipe 0.10.21 (installed --no-deps, files only): face_detection_full_range_sparse.tflite, "
           "face_landmark.tflite, iris_landmark.tflite; "
           "canonical face model from npm @mediapipe/face_mesh 0.4.1657299874",
    license="Apache-2.0 (Google MediaPipe)",
    description="BlazeFace full-range + face mesh + solvePnP on MediaPipe's canonical face + iris landmarks: "
                "face box, 6 landmarks, eye (else head) yaw/pitch in radians",
)


@dataclass
class Face:
    """One detected face in image pixels."""

    box: np.ndarray  # x1, y1, x2, y2
    keypoints: np.ndarray  # (6, 2)
    score: float


@dataclass
class Iris:
    """What the iris model says about one eye."""

    centre: np.ndarray  # x, y in image pixels
    #: lid to lid over corner to corner, from the iris model's own eye outline
    openness: float
    #: 1 - the iris's brightness over the white of the eye's: ~0 where no iris is visible
    contrast: float


class GazeDetector:
    """Face detection, face mesh, head pose and irises; one frame at a time (the files have batch 1)."""

    info = INFO

    def __init__(self, threads: int = 0) -> None:
        self._detector = TFLiteModel(package_file(PACKAGE, DETECTOR, INSTALL_HINT), threads)
        self._mesh = TFLiteModel(package_file(PACKAGE, MESH, INSTALL_HINT), threads)
        self._iris = TFLiteModel(package_file(PACKAGE, IRIS, INSTALL_HINT), threads)

    def image_size(self, source_size: tuple[int, int]) -> tuple[int, int]:
        width, height = source_size
        scale = min(1.0, MAX_SIDE / max(width, height))
        return max(1, round(width * scale)), max(1, round(height * scale))

    def predict(
        self, images: Sequence[np.ndarray], source_size: tuple[int, int], params: InferenceParams
    ) -> list[Gazes]:
        return [self._one(image, source_size, params) for image in images]

    def _one(self, image: np.ndarray, source_size: tuple[int, int], params: InferenceParams) -> Gazes:
        started = time.perf_counter()
        faces = self.detect(image, params.confidence)[: params.max_detections]
        detected = time.perf_counter()
        boxes, scores, keypoints, angles, sources = [], [], [], [], []
        for face in faces:
            mesh = self.mesh(image, face)
            if mesh is None:
                continue
            head = head_pose(mesh, image.shape[1], image.shape[0])
            eyes = self.eye_angles(image, mesh) if max(abs(head[0]), abs(head[1])) <= MAX_HEAD_TURN else None
            gaze = head if eyes is None else (head[0] + eyes[0], head[1] + eyes[1])
            boxes.append(face.box)
            scores.append(face.score)
            keypoints.append(face.keypoints)
            angles.append((*gaze, *head))
            sources.append("head" if eyes is None else "eyes")
        scale = source_size[0] / image.shape[1]
        angle = np.array(angles, dtype=np.float32).reshape(-1, 4)
        return Gazes(
            xyxy=np.array(boxes, dtype=np.float32).reshape(-1, 4) * scale,
            confidence=np.array(scores, dtype=np.float32),
            landmarks=np.array(keypoints, dtype=np.float32).reshape(-1, 6, 2) * scale,
            yaw=angle[:, 0], pitch=angle[:, 1], head_yaw=angle[:, 2], head_pitch=angle[:, 3],
            gaze_source=sources,
            time_face_det=detected - started, time_gaze_det=time.perf_counter() - detected,
        )

    # -- step 1: BlazeFace ---------------------------------------------------------
    def detect(self, image: np.ndarray, min_score: float) -> list[Face]:
        """Faces scoring at least ``min_score``, best first, in ``image`` pixels.

        The detector sees a 192x192 square and misses faces under ~13 of its
        pixels, so a wide frame is also searched in square tiles of its height
        (a face of 75 px in a 1080p frame is found), then duplicates are merged.
        """
        rows = [self._detect_square(image, 0, 0, max(image.shape[:2]), min_score)]
        for x, y, side in _tiles(image.shape[1], image.shape[0]):
            rows.append(self._detect_square(image, x, y, side, min_score))
        found = np.concatenate(rows)
        if not len(found):
            return []
        order = _nms(found[:, :4], found[:, 16], NMS_IOU)
        return [Face(found[i, :4], found[i, 4:16].reshape(6, 2), float(found[i, 16])) for i in order]

    def _detect_square(self, image: np.ndarray, x: int, y: int, side: int, min_score: float) -> np.ndarray:
        """Rows of box (4), keypoints (12) and score (1) in image pixels, for the square at x, y."""
        region = image[y:y + side, x:x + side]
        square = np.zeros((side, side, 3), dtype=np.uint8)  # pad: the detector wants a square
        square[:region.shape[0], :region.shape[1]] = region
        tensor = cv2.resize(square, (DETECT_SIZE, DETECT_SIZE), interpolation=cv2.INTER_AREA)
        raw_boxes, raw_scores = self._detector(tensor.astype(np.float32)[None] / 127.5 - 1.0)
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(-1), -80.0, 80.0)))
        keep = np.flatnonzero(scores >= min_score)
        decoded = _decode(raw_boxes.reshape(-1, 16)[keep], _anchors()[keep]) * side
        decoded[:, 0::2] += x
        decoded[:, 1::2] += y
        return np.c_[decoded, scores[keep]]

    # -- step 2: the face mesh -----------------------------------------------------
    def mesh(self, image: np.ndarray, face: Face) -> np.ndarray | None:
        """468 (x, y, z) landmarks in image pixels, or None when the mesh model sees no face."""
        to_image = _crop_transform(face)
        crop = cv2.warpAffine(image, to_image, (MESH_SIZE, MESH_SIZE),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
        raw, presence = self._mesh(crop.astype(np.float32)[None] / 255.0)
        if 1.0 / (1.0 + math.exp(-float(presence.reshape(-1)[0]))) < FACE_PRESENCE:
            return None
        points = raw.reshape(-1, 3)
        xy = np.c_[points[:, :2], np.ones(len(points))] @ to_image.T
        scale = float(np.hypot(*to_image[:, 0]))
        return np.c_[xy, points[:, 2] * scale]

    # -- step 4: the irises -------------------------------------------------------
    def eye_angles(self, image: np.ndarray, mesh: np.ndarray) -> tuple[float, float] | None:
        """(yaw, pitch) of the eyes within the head, the mean over the eyes seen; None when none is."""
        seen = [angles for eye in EYES if (angles := self._eye(image, mesh, *eye)) is not None]
        if not seen:
            return None
        yaw, pitch = np.mean(seen, axis=0)
        return float(yaw), float(pitch)

    def iris(self, image: np.ndarray, mesh: np.ndarray, first: int, second: int, mirror: bool) -> Iris:
        """The iris model on the eye whose corners are mesh points ``first``, ``second``."""
        to_image = _eye_transform(mesh[first, :2], mesh[second, :2], mirror)
        crop = cv2.warpAffine(image, to_image, (EYE_SIZE, EYE_SIZE),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        contour, iris = self._iris(crop.astype(np.float32)[None] / 255.0)
        iris = iris.reshape(5, 3)[:, :2]  # centre, then 4 points on the iris's edge (crop pixels)
        lids = contour.reshape(71, 3)[:16, 1]  # the eye's outline: both lids, corner to corner
        radius = float(np.linalg.norm(iris[1:] - iris[0], axis=1).mean())
        grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
        ys, xs = np.mgrid[0:EYE_SIZE, 0:EYE_SIZE]
        distance = np.hypot(xs - iris[0, 0], ys - iris[0, 1])
        eye_width = EYE_SIZE / EYE_CROP_SCALE
        # the white of the eye: beside the iris, between the corners, at the iris's height
        beside = (np.abs(xs - EYE_SIZE / 2) <= eye_width / 2) & (np.abs(ys - iris[0, 1]) <= 0.6 * radius) \
            & (distance > 1.3 * radius)
        inside = grey[distance <= 0.7 * radius]
        sclera = float(np.percentile(grey[beside], 90)) if beside.any() else 0.0
        contrast = 1.0 - float(inside.mean()) / sclera if inside.size and sclera > 0 else 0.0
        return Iris(centre=to_image @ np.array([*iris[0], 1.0]),
                    openness=float(np.ptp(lids)) / eye_width, contrast=contrast)

    def _eye(self, image: np.ndarray, mesh: np.ndarray, first: int, second: int,
             mirror: bool) -> tuple[float, float] | None:
        """One eye's (yaw, pitch) within the head, or None when it is closed, covered or the iris is lost."""
        start, end = mesh[first, :2], mesh[second, :2]
        width = float(np.linalg.norm(end - start))
        if width < MIN_EYE_WIDTH:
            return None
        found = self.iris(image, mesh, first, second, mirror)
        if found.openness < MIN_OPENNESS or found.contrast < MIN_IRIS_CONTRAST:
            return None
        across = (end - start) / width  # the eye's own axes: along the corners, and down
        down = np.array([-across[1], across[0]])
        offset = found.centre - (start + end) / 2
        dx, dy = float(offset @ across) / width, float(offset @ down) / width
        if math.hypot(dx, dy) > MAX_IRIS_OFFSET:
            return None
        # the iris towards the image's left is a yaw > 0, up a pitch > 0 (the head's convention)
        return (math.asin(min(1.0, max(-1.0, -dx / EYEBALL_RADIUS))),
                math.asin(min(1.0, max(-1.0, -dy / EYEBALL_RADIUS))))


def head_pose(mesh: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """(yaw, pitch) in radians of the face's forward direction; see the module docstring.

    Angles are measured from the line between the face and the camera, not from
    the camera's optical axis: a face near the top of the frame that looks into
    the lens gives 0, 0 (it would give a pitch of about -15 degrees against the
    optical axis). This is also what gaze models trained on face crops output.
    """
    focal = float(max(width, height))  # ~53 degrees field of view; the result barely depends on it
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=np.float64)
    image_points = mesh[_MESH_IDS, :2].astype(np.float64)
    ok, rvec, tvec = cv2.solvePnP(_MODEL_POINTS, image_points, camera, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:  # pragma: no cover - SQPnP always returns a solution for 33 points
        return 0.0, 0.0
    rotation, _ = cv2.Rodrigues(rvec)
    forward = _towards_face(tvec.reshape(3)) @ rotation @ np.array([0.0, 0.0, -1.0])
    yaw = math.atan2(-forward[0], -forward[2])
    pitch = math.asin(float(np.clip(-forward[1], -1.0, 1.0)))
    return yaw, pitch


def _towards_face(translation: np.ndarray) -> np.ndarray:
    """The rotation taking the camera-to-face ray onto the optical axis (z)."""
    ray = translation / np.linalg.norm(translation)
    axis = np.cross(ray, [0.0, 0.0, 1.0])
    sin = float(np.linalg.norm(axis))
    if sin < 1e-9:
        return np.eye(3)
    angle = math.atan2(sin, float(ray[2]))
    rotation, _ = cv2.Rodrigues(axis / sin * angle)
    return rotation


def _crop_transform(face: Face) -> np.ndarray:
    """2x3 affine from mesh-crop pixels to image pixels: square, 1.5x the box, eyes level."""
    right_eye, left_eye = face.keypoints[0], face.keypoints[1]
    angle = math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])
    x1, y1, x2, y2 = face.box
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    side = max(x2 - x1, y2 - y1) * CROP_SCALE
    scale = side / MESH_SIZE
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    linear = np.array([[cos, -sin], [sin, cos]])
    offset = centre - linear @ np.array([MESH_SIZE / 2, MESH_SIZE / 2])
    return np.c_[linear, offset]


def _eye_transform(start: np.ndarray, end: np.ndarray, mirror: bool) -> np.ndarray:
    """2x3 affine from eye-crop pixels to image pixels: square, 2.3x the corners' distance, corners level."""
    angle = math.atan2(end[1] - start[1], end[0] - start[0])
    scale = float(np.linalg.norm(end - start)) * EYE_CROP_SCALE / EYE_SIZE
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    linear = np.array([[cos, -sin], [sin, cos]])
    if mirror:
        linear = linear @ np.diag([-1.0, 1.0])
    offset = (start + end) / 2 - linear @ np.array([EYE_SIZE / 2, EYE_SIZE / 2])
    return np.c_[linear, offset]


def _tiles(width: int, height: int) -> list[tuple[int, int, int]]:
    """Overlapping squares (x, y, side) of the short side covering a non-square frame."""
    side, long = min(width, height), max(width, height)
    if long < side * 1.2:
        return []  # the whole frame is nearly square already
    count = math.ceil(long / side) + 1  # at least a third of a tile of overlap
    starts = [round(i * (long - side) / (count - 1)) for i in range(count)]
    return [(s, 0, side) if width >= height else (0, s, side) for s in starts]


@lru_cache(maxsize=1)
def _anchors() -> np.ndarray:
    """BlazeFace full-range SSD anchors: one per cell of a 48x48 grid (stride 4), centres in 0..1."""
    cells = DETECT_SIZE // 4
    ys, xs = np.mgrid[0:cells, 0:cells]
    return np.stack([(xs.ravel() + 0.5) / cells, (ys.ravel() + 0.5) / cells], axis=1).astype(np.float32)


def _decode(raw: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Box (x1, y1, x2, y2) and 6 keypoints per row, in 0..1 of the detector's square."""
    raw = raw / DETECT_SIZE
    cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
    half_w, half_h = raw[:, 2] / 2, raw[:, 3] / 2
    keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
    return np.c_[cx - half_w, cy - half_h, cx + half_w, cy + half_h, keypoints.reshape(-1, 12)]


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    return [int(i) for i in np.array(cv2.dnn.NMSBoxes(
        [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)] for x1, y1, x2, y2 in boxes],
        scores.tolist(), 0.0, iou)).reshape(-1)]
