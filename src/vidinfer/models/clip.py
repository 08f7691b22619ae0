"""``clip`` (``clip-embed-image``): CLIP image embeddings per frame, zero-shot labels, text search.

No CLIP weights ship in any package that works offline, so vidinfer runs the
ONNX export a user points it at: a folder with a split image and text encoder,
named as in the split CLIP exports published for transformers.js and as the
README's export script (open_clip + torch) writes them::

    vision_model.onnx   pixel_values [N, 3, S, S] float32 -> image_embeds [N, D]
    text_model.onnx     input_ids    [N, 77] int64 (+ attention_mask) -> text_embeds [N, D]
    tokenizer.json, or vocab.json + merges.txt, or bpe_simple_vocab_16e6.txt.gz  (optional)
    preprocessor_config.json                                                     (optional)

The files may also sit in an ``onnx/`` subfolder; ``image_encoder.onnx`` /
``text_encoder.onnx`` (or ``visual.onnx`` / ``textual.onnx``) are accepted too.
Where the names differ (a plain ``torch.onnx.export`` of open_clip's
``encode_image`` / ``encode_text``), the 4-d float input and the 2-d integer
input are the image and the text; the output used is the one
named ``image_embeds`` / ``text_embeds`` (``*embed*``), else the first ``[N, D]``
one. Without tokenizer files the OpenAI vocabulary that ships with vidinfer is
used (OpenAI's and most OpenCLIP models share it).

Preprocessing is CLIP's own: the frame's shorter side resized to ``S`` with
PIL's bicubic filter (as torchvision's ``Resize`` on a PIL image), the centre
``S x S`` crop, scaled to 0..1 and normalised with OpenAI's mean and std (or
``image_mean`` / ``image_std`` from ``preprocessor_config.json``). ``S`` is the
export's input size (224, or 336 for ViT-L/14@336), else the config's, else 224.

Output per frame: ``{"time", "embeddings": [[...D floats...]]}``, L2-normalised.
With ``inference_params: {"prompts": ["a dog", "a cat", ...]}`` each entry also
gets CLIP's zero-shot classification over the prompts, in the classification
shape: ``predictions`` (every prompt, best first), ``top`` and ``confidence``
(softmax over ``100 * cosine``, CLIP's trained logit scale).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidinfer.core.model import InferenceParams, ModelInfo
from vidinfer.core.results import Classification, Embedding
from vidinfer.errors import ModelError
from vidinfer.models.clip_tokenizer import CONTEXT_LENGTH, ClipTokenizer

IMAGE_FILES = ("vision_model.onnx", "image_encoder.onnx", "visual.onnx")
TEXT_FILES = ("text_model.onnx", "text_encoder.onnx", "textual.onnx")
#: OpenAI CLIP's normalisation (torchvision Normalize after ToTensor)
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_SIZE = 224
#: CLIP's learned temperature at the end of training (exp(4.6052)); zero-shot softmax uses it
LOGIT_SCALE = 100.0
MAX_PROMPTS = 1000
SETTING_HINT = ("set VIDINFER_CLIP_DIR to a folder holding a CLIP ONNX export (vision_model.onnx, "
                "text_model.onnx), or register one with `vidinfer models add clip FOLDER`; "
                "see the README's section on CLIP")


def not_configured() -> ModelError:
    return ModelError(f"no CLIP model is configured: {SETTING_HINT}", code="model_not_configured")


def find_encoders(folder: Path) -> tuple[Path, Path]:
    """The image and text encoder files of a CLIP export folder (or its ``onnx/`` subfolder)."""
    if not folder.is_dir():
        raise ModelError(f"the CLIP model folder {folder} does not exist: {SETTING_HINT}", code="model_not_configured")
    for where in (folder, folder / "onnx"):
        image = next((where / n for n in IMAGE_FILES if (where / n).is_file()), None)
        text = next((where / n for n in TEXT_FILES if (where / n).is_file()), None)
        if image and text:
            return image, text
    raise ModelError(
        f"{folder} is not a CLIP ONNX export: it needs an image encoder ({' or '.join(IMAGE_FILES)}) and a "
        f"text encoder ({' or '.join(TEXT_FILES)}), side by side or in an onnx/ subfolder",
        code="invalid_model_file")


def clip_preprocess(image: np.ndarray, size: int, mean: Sequence[float] = MEAN,
                    std: Sequence[float] = STD) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` -> ``(3, size, size)`` float32, exactly CLIP's torchvision transform.

    ``Resize(size, BICUBIC)`` (shorter side to ``size``, the longer side
    truncated as torchvision does), ``CenterCrop(size)``, ``ToTensor()``,
    ``Normalize(mean, std)``.
    """
    from PIL import Image

    height, width = image.shape[:2]
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    if (width, height) != new_size:
        image = np.asarray(Image.fromarray(image).resize(new_size, Image.Resampling.BICUBIC))
    height, width = image.shape[:2]
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    crop = image[top:top + size, left:left + size].astype(np.float32) / 255.0
    crop = (crop - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(crop.transpose(2, 0, 1))


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class _Encoder:
    """One ONNX encoder: which input takes the data, which output is the embedding."""

    session: Any
    input_name: str
    mask_name: str | None
    input_dtype: type
    output_index: int
    batch: int | None  # fixed batch size of the export, None when dynamic
    static_dims: tuple[int | None, ...]

    def run(self, data: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Embeddings ``[N, D]`` for a batch, looping where the export has a fixed batch."""
        if self.batch is not None and len(data) != self.batch:
            if self.batch != 1:
                raise ModelError(f"a CLIP encoder with a fixed batch of {self.batch} is not supported: "
                                 "export with a dynamic batch axis", code="unsupported_model")
            return np.concatenate([self.run(data[i:i + 1], None if mask is None else mask[i:i + 1])
                                   for i in range(len(data))])
        feeds = {self.input_name: data.astype(self.input_dtype, copy=False)}
        if self.mask_name is not None and mask is not None:
            feeds[self.mask_name] = mask.astype(self.input_dtype)
        out = np.asarray(self.session.run(None, feeds)[self.output_index], dtype=np.float32)
        return out.reshape(len(data), -1)


def _encoder(path: Path, kind: str, threads: int, providers: Sequence[str]) -> _Encoder:
    from vidinfer.models.onnx_session import describe, open_session

    session = open_session(path, threads, providers)
    described = f"{path.name}: {describe(session)}"
    inputs = session.get_inputs()
    if kind == "image":
        candidates = [i for i in inputs if len(i.shape) == 4]
        dtype_of = {"tensor(float16)": np.float16, "tensor(float)": np.float32}
    else:
        candidates = [i for i in inputs if len(i.shape) == 2 and i.name != "attention_mask"]
        dtype_of = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
    main = next((i for i in candidates if i.name in ("pixel_values", "input_ids")), candidates[0] if candidates else None)
    if main is None or main.type not in dtype_of:
        want = "pixel_values [N,3,S,S] float" if kind == "image" else "input_ids [N,77] int64"
        raise ModelError(f"unsupported CLIP {kind} encoder: expected an input {want}; {described}",
                         code="unsupported_model")
    names = {i.name for i in inputs}
    mask = "attention_mask" if kind == "text" and "attention_mask" in names else None
    extra = names - {main.name} - ({mask} if mask else set())
    if extra:
        raise ModelError(f"unsupported CLIP {kind} encoder: unexpected inputs {sorted(extra)}; {described}",
                         code="unsupported_model")
    outputs = session.get_outputs()
    ranked = [i for i, o in enumerate(outputs) if len(o.shape) == 2]
    named = [i for i in ranked if "embed" in outputs[i].name]
    if not ranked:
        raise ModelError(f"unsupported CLIP {kind} encoder: no [N, D] embedding output; {described}",
                         code="unsupported_model")
    dims = tuple(d if isinstance(d, int) and d > 0 else None for d in main.shape)
    return _Encoder(session, main.name, mask, dtype_of[main.type], (named or ranked)[0], dims[0], dims)


def _read_preprocessor(*folders: Path) -> dict[str, Any]:
    for where in folders:
        path = where / "preprocessor_config.json"
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ModelError(f"{path} is unreadable: {exc}", code="invalid_model_file") from exc
    return {}


def _config_size(config: dict[str, Any]) -> int | None:
    crop = config.get("crop_size")
    if isinstance(crop, dict):
        crop = crop.get("height")
    return crop if isinstance(crop, int) and crop > 0 else None


class ClipModel:
    """A CLIP export: image embeddings per frame, text embeddings for prompts and search."""

    def __init__(self, folder: Path, name: str = "clip", threads: int = 0, providers: Sequence[str] = ()) -> None:
        folder = Path(folder).expanduser().resolve()
        image_path, text_path = find_encoders(folder)
        self.folder = folder
        self._image = _encoder(image_path, "image", threads, providers)
        self._text = _encoder(text_path, "text", threads, providers)
        config = _read_preprocessor(image_path.parent, folder)
        self.size = self._image.static_dims[2] or _config_size(config) or DEFAULT_SIZE
        self.mean = tuple(config.get("image_mean", MEAN))
        self.std = tuple(config.get("image_std", STD))
        self.context_length = self._text.static_dims[1] or CONTEXT_LENGTH
        self.tokenizer = ClipTokenizer.for_folder(text_path.parent, folder)
        self._prompt_cache: dict[tuple[str, ...], np.ndarray] = {}
        self._lock = threading.Lock()
        probe = self.embed_text(["a photo"])
        self.dim = probe.shape[1]
        self.info = ModelInfo(
            name=name,
            task="clip-embed-image",
            classes=(),
            input_size=(self.size, self.size),
            source=f"your CLIP ONNX export: {image_path}, {text_path}; tokenizer: "
                   f"{self.tokenizer.source or 'OpenAI vocabulary shipped with vidinfer'}",
            license="that of your CLIP weights (OpenAI CLIP: MIT; OpenCLIP: see the model card); "
                    "bundled tokenizer vocabulary: MIT (OpenAI)",
            description=f"CLIP image embeddings ({self.dim}-d, L2-normalised) at {self.size}x{self.size}; "
                        "zero-shot labels with inference_params.prompts; text search with `vidinfer search`",
            extra_params=("prompts",),
        )

    def image_size(self, source_size: tuple[int, int]) -> tuple[int, int]:
        return source_size  # resized here, with PIL's bicubic filter as CLIP was trained

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised ``[N, D]`` embeddings of RGB uint8 images of any size."""
        blob = np.stack([clip_preprocess(im, self.size, self.mean, self.std) for im in images])
        return normalise(self._image.run(blob))

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised ``[N, D]`` embeddings of texts."""
        ids = self.tokenizer(list(texts), self.context_length)
        # attention over the start token, the text and the end token (id 0 is "!", not only padding)
        ends = np.argmax(ids == self.tokenizer.end_id, axis=1)
        mask = np.arange(ids.shape[1])[None, :] <= ends[:, None]
        return normalise(self._text.run(ids, mask))

    def predict(
        self, images: Sequence[np.ndarray], source_size: tuple[int, int], params: InferenceParams
    ) -> list[Embedding]:
        prompts = prompts_param(params)
        vectors = self.embed_images(images)
        if not prompts:
            return [Embedding(v[None]) for v in vectors]
        text = self._prompt_vectors(prompts)
        logits = LOGIT_SCALE * vectors @ text.T
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        return [Embedding(v[None], classification=Classification(list(prompts), p, top_k=len(prompts)))
                for v, p in zip(vectors, probs)]

    def _prompt_vectors(self, prompts: tuple[str, ...]) -> np.ndarray:
        with self._lock:
            cached = self._prompt_cache.get(prompts)
        if cached is None:
            cached = self.embed_text(prompts)
            with self._lock:
                if len(self._prompt_cache) > 64:
                    self._prompt_cache.clear()
                self._prompt_cache[prompts] = cached
        return cached


def prompts_param(params: InferenceParams) -> tuple[str, ...]:
    """``prompts`` checked here (InferenceParams passes model-specific keys through unchecked), and by
    the API at submit (``Builtin.params_check``)."""
    value = params.extra.get("prompts")
    if value is None:
        return ()
    if (not isinstance(value, list) or not 1 <= len(value) <= MAX_PROMPTS
            or not all(isinstance(p, str) and p.strip() for p in value)):
        raise ModelError(f"prompts must be a list of 1 to {MAX_PROMPTS} non-empty strings, got {value!r}",
                         code="invalid_inference_params")
    if len(set(value)) != len(value):
        raise ModelError("prompts must not repeat", code="invalid_inference_params")
    return tuple(value)


def load_clip(folder: str | Path | None, name: str = "clip", threads: int = 0,
              providers: Sequence[str] = ()) -> ClipModel:
    """The CLIP model in ``folder``; a clear error naming the setting when there is none."""
    if folder is None or str(folder) == "":
        raise not_configured()
    return ClipModel(Path(folder), name=name, threads=threads, providers=providers)
