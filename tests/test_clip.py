"""CLIP: the real tokenizer and preprocessing, tiny ONNX encoders of the real signature, zero-shot, search.

No CLIP weights can be had here, so the encoders are built with ``onnx.helper``
with the inputs and outputs of Hugging Face's ONNX exports. They are made so
the right answers are known: the image encoder's embedding is a fixed random
projection of the frame's mean colour, and the text encoder sums one vector per
token, where the tokens ``red``, ``green`` and ``blue`` carry the projections of
those colours. So "a red car" must match red frames, and search for "blue" must
find the blue frames.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_builtin_models import photos_video
from vidinfer.cli import main
from vidinfer.config import Settings
from vidinfer.errors import InvalidInput, ModelError
from vidinfer.inference import ModelRequest, resolve_runs, run_inference
from vidinfer.models.clip import MEAN, STD, ClipModel, clip_preprocess
from vidinfer.models.clip_tokenizer import ClipTokenizer
from vidinfer.models.registry import LoadOptions, ModelRegistry
from vidinfer.search import rank, search_text

DIM = 16
VOCAB = 49408
COLOURS = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}


# -- the tokenizer ---------------------------------------------------------------------
#: ids from open_clip 3.3.0's SimpleTokenizer (with ftfy and regex), the reference implementation
REFERENCE_IDS = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "a photo of a dog": [49406, 320, 1125, 539, 320, 1929, 49407],
    "A Photo Of A CAT!": [49406, 320, 1125, 539, 320, 2368, 256, 49407],
    "Hello,   world!!": [49406, 3306, 267, 1002, 748, 49407],
    "it's a person's bicycle, isn't it?": [49406, 585, 568, 320, 2533, 568, 11652, 267, 2923, 713, 585, 286, 49407],
    "don't 1984 $3.50 ~~~": [49406, 847, 713, 272, 280, 279, 275, 259, 274, 269, 276, 271, 32472, 49407],
    "naïve café über straße": [49406, 1097, 35689, 563, 15304, 6522, 1516, 1894, 127, 253, 324, 49407],
    "東京の夜景": [49406, 48338, 21078, 105, 21575, 23170, 250, 48132, 363, 49407],
    "&amp; &lt;b&gt; tags": [49406, 261, 283, 321, 285, 11606, 49407],
    "  leading and\ttrailing\nspace  ": [49406, 3833, 537, 37427, 2138, 49407],
    "supercalifragilisticexpialidocious": [49406, 1642, 2857, 13093, 2076, 5868, 26850, 835, 639, 38466, 49407],
    "CCTV camera 7 at gate B-12": [49406, 23097, 3934, 278, 536, 3302, 321, 268, 272, 273, 49407],
    "x² ½ Ⅻ ١٢٣": [49406, 343, 41175, 33613, 158, 227, 375, 149, 350, 149, 351, 149, 352, 49407],
    "''s quoted'' 'll": [49406, 8445, 338, 27706, 8445, 1342, 49407],
    # ftfy's fixes: curly quotes, ligatures, full-width forms, NFC
    "it\u2019s a \u201cquoted\u201d \ufb01sh": [49406, 585, 568, 320, 257, 27706, 257, 2759, 49407],
    "\uff23\uff23\uff34\uff36\u3000\u30ab\u30e1\u30e9": [49406, 23097, 37367, 2429, 94, 2429, 358, 49407],
    "cafe\u0301": [49406, 15304, 49407],
}


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer.bundled()


@pytest.mark.parametrize("text", list(REFERENCE_IDS))
def test_tokenizer_matches_the_reference(tokenizer: ClipTokenizer, text: str) -> None:
    expected = REFERENCE_IDS[text]
    ids = tokenizer([text])
    assert ids.shape == (1, 77) and ids.dtype == np.int64
    assert ids[0, :len(expected)].tolist() == expected
    assert not ids[0, len(expected):].any()  # zero padding


def test_tokenizer_truncates_and_still_ends(tokenizer: ClipTokenizer) -> None:
    ids = tokenizer(["cat " * 100, "dog"])
    assert ids[0, 0] == 49406 and ids[0, 76] == 49407 and (ids[0, 1:76] == 2368).all()
    assert ids[1, :3].tolist() == [49406, 1929, 49407]
    assert tokenizer(["a photo of a cat"], context_length=5).tolist() == [[49406, 320, 1125, 539, 49407]]


def _hf_files(tokenizer: ClipTokenizer, folder: Path) -> list[str]:
    """Hugging Face's tokenizer files, written from the bundled vocabulary."""
    merges = sorted(tokenizer.ranks, key=tokenizer.ranks.get)
    (folder / "vocab.json").write_text(json.dumps(tokenizer.encoder))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    return [f"{a} {b}" for a, b in merges]


@pytest.mark.parametrize("layout", ["vocab+merges", "tokenizer.json", "none"])
def test_tokenizer_reads_each_export_layout(tokenizer: ClipTokenizer, tmp_path: Path, layout: str) -> None:
    if layout == "vocab+merges":
        _hf_files(tokenizer, tmp_path)
    elif layout == "tokenizer.json":
        merges = [m.split() for m in _hf_files(tokenizer, tmp_path)]  # the newer list-of-pairs form
        (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": tokenizer.encoder,
                                                                       "merges": merges}}))
        (tmp_path / "vocab.json").unlink()
    loaded = ClipTokenizer.for_folder(tmp_path)
    assert (layout == "none") == (loaded is tokenizer)
    for text, expected in list(REFERENCE_IDS.items())[:6]:
        assert loaded([text])[0, :len(expected)].tolist() == expected


# -- preprocessing -------------------------------------------------------------------
def test_preprocess_resizes_the_short_side_and_crops_the_centre() -> None:
    image = np.zeros((300, 600, 3), dtype=np.uint8)
    image[:, :150] = (255, 0, 0)  # left and right quarters fall outside the centre crop
    image[:, 450:] = (0, 0, 255)
    image[:, 150:450] = (255, 255, 255)
    out = clip_preprocess(image, 224)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    white = (1.0 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(out[:, 5:-5, 5:-5].mean(axis=(1, 2)), white, rtol=1e-4)
    # 600x300 -> 448x224 (bicubic), crop x 112..336: the colour edges at 112 and 336 land on the crop's edges
    assert abs(out[0, 100, 0] - white[0]) < 0.6 and abs(out[2, 100, 223] - white[2]) < 0.6


def test_preprocess_matches_torchvision_sizes_for_odd_shapes() -> None:
    image = np.random.default_rng(0).integers(0, 255, (481, 333, 3), dtype=np.uint8)
    assert clip_preprocess(image, 224).shape == (3, 224, 224)
    assert clip_preprocess(image, 336).shape == (3, 336, 336)


# -- tiny encoders with the real signature ---------------------------------------------
def _colour_projection() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(3, DIM)).astype(np.float32)


def image_encoder(path: Path, *, batch: int | str = "batch", input_name: str = "pixel_values",
                  output_name: str = "image_embeds") -> Path:
    """pixel_values [N,3,224,224] -> image_embeds [N,D]: the mean colour (normalised) times a projection."""
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["mean", "proj"], [output_name]),
        helper.make_node("Unsqueeze", [output_name, "one"], ["last_hidden_state"]),
    ]
    nodes[0].input[0] = input_name
    graph = helper.make_graph(
        nodes, "clip_vision",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, 224, 224])],
        # a [N, 1, D] output first, as Hugging Face's exports have: the [N, D] embedding must be picked
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [batch, 1, DIM]),
         helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, DIM])],
        [numpy_helper.from_array(_colour_projection(), "proj"), numpy_helper.from_array(np.array([1]), "one")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def token_table(tokenizer: ClipTokenizer) -> np.ndarray:
    """One vector per token: small noise, and the colour words carry their colour's direction."""
    table = np.random.default_rng(3).normal(scale=0.02, size=(VOCAB, DIM)).astype(np.float32)
    proj = _colour_projection()
    for i, colour in enumerate(COLOURS):
        # the image encoder sees (c - mean) / std per channel: what a pure colour projects to
        pure = (np.array(COLOURS[colour]) / 255.0 - np.array(MEAN)) / np.array(STD)
        (token,) = tokenizer.encode(colour)
        table[token] = 3 * pure @ proj / np.linalg.norm(pure @ proj)
        assert i == list(COLOURS).index(colour)
    return table


def text_encoder(path: Path, tokenizer: ClipTokenizer, *, mask: bool = True, input_name: str = "input_ids",
                 output_name: str = "text_embeds") -> Path:
    """input_ids [N,77] int64 (+ attention_mask) -> text_embeds [N,D]: the sum of the tokens' vectors."""
    nodes = [helper.make_node("Gather", ["table", input_name], ["vectors"])]
    if mask:
        nodes += [
            helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["maskf", "two"], ["mask3"]),
            helper.make_node("Mul", ["vectors", "mask3"], ["masked"]),
        ]
    nodes.append(helper.make_node("ReduceSum", ["masked" if mask else "vectors", "axis1"], [output_name], keepdims=0))
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.INT64, ["batch", 77])]
    if mask:
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", 77]))
    graph = helper.make_graph(
        nodes, "clip_text", inputs,
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", DIM])],
        [numpy_helper.from_array(token_table(tokenizer), "table"), numpy_helper.from_array(np.array([2]), "two"),
         numpy_helper.from_array(np.array([1]), "axis1")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: ClipTokenizer) -> Path:
    """A folder laid out like Hugging Face's ONNX export (onnx/ subfolder, tokenizer files beside it)."""
    folder = tmp_path_factory.mktemp("clip-export")
    (folder / "onnx").mkdir()
    image_encoder(folder / "onnx" / "vision_model.onnx")
    text_encoder(folder / "onnx" / "text_model.onnx", tokenizer)
    _hf_files(tokenizer, folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"crop_size": {"height": 224, "width": 224},
                                                                 "image_mean": list(MEAN), "image_std": list(STD)}))
    return folder


@pytest.fixture(scope="module")
def clip(clip_dir: Path) -> ClipModel:
    return ModelRegistry(options=LoadOptions(clip_dir=clip_dir)).load("clip")  # type: ignore[return-value]


def colour_frame(colour: str, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    frame = np.full((size[1], size[0], 3), COLOURS[colour], dtype=np.uint8)
    frame[:20] = 128  # a grey band: not a flat test card
    return frame


def test_clip_embeds_frames_normalised(clip: ClipModel) -> None:
    assert clip.info.task == "clip-embed-image" and clip.info.input_size == (224, 224)
    assert clip.dim == DIM and clip.tokenizer.source.endswith("clip-export0")
    vectors = clip.embed_images([colour_frame(c) for c in COLOURS])
    assert vectors.shape == (3, DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    text = clip.embed_text(["red", "green", "blue"])
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, rtol=1e-5)
    # each colour frame is nearest its own word
    assert (vectors @ text.T).argmax(axis=1).tolist() == [0, 1, 2]


def test_text_padding_is_masked(clip: ClipModel) -> None:
    """The mask covers start, text and end: trailing "!" (id 0, as padding is) still counts."""
    assert not np.allclose(clip.embed_text(["red"]), clip.embed_text(["red !"]))


def test_clip_over_a_video_with_zero_shot_prompts(clip_dir: Path, tmp_path: Path) -> None:
    video = photos_video(tmp_path / "colours.mp4", [colour_frame(c) for c in COLOURS], size=(320, 240), fps=2)
    registry = ModelRegistry(options=LoadOptions(clip_dir=clip_dir))
    prompts = ["a blue thing", "a red thing", "a green thing"]
    runs = resolve_runs(registry, [ModelRequest("clip", "clip"),
                                   ModelRequest("labels", "clip", {"prompts": prompts})])
    results = run_inference(str(video), runs, Fraction(1)).results_json
    assert results["time_offset"] == [0.0, 1.0, 2.0]
    for entry in results["clip"]:
        assert set(entry) == {"time", "embeddings"}
        (vector,) = entry["embeddings"]
        assert len(vector) == DIM and abs(np.linalg.norm(vector) - 1) < 1e-4
    tops = [entry["top"] for entry in results["labels"]]
    assert tops == ["a red thing", "a green thing", "a blue thing"]
    for entry in results["labels"]:
        assert set(entry) == {"time", "embeddings", "predictions", "top", "confidence"}
        assert [p["class"] for p in entry["predictions"]][0] == entry["top"]
        assert sorted(p["class_id"] for p in entry["predictions"]) == [0, 1, 2]  # index into the prompts
        assert abs(sum(p["confidence"] for p in entry["predictions"]) - 1) < 1e-3
        assert entry["confidence"] > 0.9


@pytest.mark.parametrize(("prompts", "error"), [
    ("a cat", "list"), ([], "list"), (["a cat", ""], "non-empty"), (["a", "a"], "repeat"), ([3], "list"),
])
def test_bad_prompts_are_refused(clip: ClipModel, prompts: object, error: str) -> None:
    from vidinfer.core.model import InferenceParams

    params = InferenceParams.parse({"prompts": prompts}, clip.info)
    with pytest.raises(ModelError, match=error) as caught:
        clip.predict([colour_frame("red")], (320, 240), params)
    assert caught.value.code == "invalid_inference_params"


# -- other export layouts ----------------------------------------------------------------
def test_open_clip_style_export_with_other_names_and_a_fixed_batch(tmp_path: Path, tokenizer: ClipTokenizer) -> None:
    """torch.onnx.export of encode_image / encode_text: other names, batch 1, no mask, no tokenizer files."""
    image_encoder(tmp_path / "image_encoder.onnx", batch=1, input_name="image", output_name="output")
    text_encoder(tmp_path / "text_encoder.onnx", tokenizer, mask=False, input_name="text", output_name="output")
    model = ClipModel(tmp_path)
    assert model.tokenizer is tokenizer  # the vocabulary shipped with vidinfer
    vectors = model.embed_images([colour_frame(c) for c in COLOURS])
    assert vectors.shape == (3, DIM)
    assert (vectors @ model.embed_text(list(COLOURS)).T).argmax(axis=1).tolist() == [0, 1, 2]


def test_a_folder_without_encoders_is_refused(tmp_path: Path) -> None:
    (tmp_path / "vision_model.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="text_model.onnx"):
        ClipModel(tmp_path)


def test_clip_without_configuration_names_the_setting() -> None:
    with pytest.raises(ModelError, match="VIDINFER_CLIP_DIR") as caught:
        ModelRegistry().load("clip")
    assert caught.value.code == "model_not_configured"
    assert "models add clip" in caught.value.message


def test_the_setting_reaches_the_registry(clip_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDINFER_CLIP_DIR", str(clip_dir))
    settings = Settings()
    assert settings.clip_dir == clip_dir
    assert ModelRegistry.from_settings(settings).load("clip").info.task == "clip-embed-image"


# -- search ----------------------------------------------------------------------------
def _results(vectors: dict[int, list[float]], key: str = "clip") -> dict:
    frames = sorted(vectors)
    return {"frame_offset": frames, "time_offset": [f / 10 for f in frames],
            key: [{"time": 0.01, "embeddings": [vectors[f]]} for f in frames]}


def test_rank_orders_frames_by_cosine_similarity() -> None:
    docs = [("a.json", _results({0: [1, 0, 0], 10: [0.6, 0.8, 0], 20: [0, 0, 1]})),
            ("b.json", _results({5: [0.8, 0.6, 0], 15: [-1, 0, 0]}, key="my-clip"))]
    hits = rank(np.array([2.0, 0, 0]), docs, top_k=4)
    assert [(h.source, h.frame_offset) for h in hits] == [("a.json", 0), ("b.json", 5), ("a.json", 10),
                                                          ("a.json", 20)]
    assert [h.score for h in hits] == pytest.approx([1.0, 0.8, 0.6, 0.0])
    assert hits[1].key == "my-clip" and hits[1].time_offset == 0.5
    assert [h.frame_offset for h in rank(np.array([1.0, 0, 0]), docs, key="my-clip")] == [5, 15]
    assert len(rank(np.array([1.0, 0, 0]), docs, min_score=0.7)) == 2


def test_rank_skips_null_frames_and_refuses_other_models() -> None:
    doc = _results({0: [1, 0], 6: [0, 1]})
    doc["clip"][0] = None
    assert [h.frame_offset for h in rank(np.array([1.0, 0]), [("x", doc)])] == [6]
    with pytest.raises(InvalidInput, match="2 dimensions but the query has 3"):
        rank(np.array([1.0, 0, 0]), [("x", doc)])
    with pytest.raises(InvalidInput, match="no CLIP embeddings"):
        rank(np.array([1.0, 0]), [("x", {"frame_offset": [0], "time_offset": [0.0], "coco": [{}]})])


def test_search_finds_the_blue_frames_of_a_video(clip: ClipModel, clip_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    order = ["red", "blue", "green", "blue"]
    video = photos_video(tmp_path / "colours.mp4", [colour_frame(c) for c in order], size=(320, 240), fps=2)
    monkeypatch.setenv("VIDINFER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VIDINFER_CLIP_DIR", str(clip_dir))
    out = tmp_path / "colours.results.json"
    main(["infer", str(video), "--model", "clip", "--fps", "1", "-q", "-o", str(out)])
    results = json.loads(out.read_text())
    assert results["frame_offset"] == [0, 2, 4, 6]

    hits = search_text(clip, "something blue", [("colours", results)], top_k=2)
    assert sorted((h.frame_offset, h.time_offset) for h in hits) == [(2, 1.0), (6, 3.0)]
    assert hits[0].score > 0.9

    capsys.readouterr()
    main(["search", "a red car", str(out), "--top", "1", "--json"])  # the older form: TEXT RESULTS...
    (moment,) = json.loads(capsys.readouterr().out)
    assert (moment["best_frame"], moment["start"], moment["end"], moment["source"]) == (0, 0.0, 1.0, str(out))
    # moments: the blue samples (1 s and 3 s) are not next to each other, so two moments of one sample each
    main(["search", str(out), "--text", "something blue", "--json"])
    moments = json.loads(capsys.readouterr().out)
    assert sorted((m["start"], m["end"], m["best_frame"]) for m in moments) == [(1.0, 2.0, 2), (3.0, 4.0, 6)]
    assert min(m["score"] for m in moments) > 0.9


def test_cli_prompts_give_zero_shot_labels(clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    video = photos_video(tmp_path / "green.mp4", [colour_frame("green")], size=(320, 240), fps=2)
    monkeypatch.setenv("VIDINFER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VIDINFER_CLIP_DIR", str(clip_dir))
    out = tmp_path / "green.json"
    main(["infer", str(video), "--model", "clip:prompts=a red apple|green grass", "--fps", "1", "-q",
          "-o", str(out)])
    (entry,) = json.loads(out.read_text())["clip"]
    assert entry["top"] == "green grass" and [p["class"] for p in entry["predictions"]] == ["green grass",
                                                                                            "a red apple"]


def test_models_add_clip_folder_then_infer(clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VIDINFER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("VIDINFER_CLIP_DIR", raising=False)
    main(["models", "add", "clip", str(clip_dir)])
    assert "clip-embed-image" in capsys.readouterr().out
    registered = json.loads((tmp_path / "data" / "models.json").read_text())["clip"]
    assert registered["kind"] == "clip" and registered["target"] == str(clip_dir)
    main(["models", "list", "--verbose"])
    listing = capsys.readouterr().out
    assert listing.count("\nclip ") == 1 and "your CLIP ONNX export" in listing
    registry = ModelRegistry(tmp_path / "data" / "models.json")
    assert registry.load("clip").info.source.startswith("your CLIP ONNX export")
    with pytest.raises(InvalidInput, match="not a built-in name"):
        registry.add("coco", str(clip_dir))


def test_the_api_searches_a_workspaces_finished_jobs(clip_dir: Path, tmp_path: Path) -> None:
    import httpx
    from server import Server

    order = ["red", "blue", "green", "blue"]
    video = photos_video(tmp_path / "colours.mp4", [colour_frame(c) for c in order], size=(320, 240), fps=2)
    clip_model = [{"model_id": "clip", "model_version": "1", "inference_type": "clip-embed-image"}]
    with Server(tmp_path / "data", env={"VIDINFER_CLIP_DIR": str(clip_dir)}) as srv:
        key, rival = srv.key("acme"), srv.key("rival")
        job_id = srv.submit(key, srv.upload(key, video), models=clip_model, infer_fps=1).json()["job_id"]
        assert srv.wait(key, job_id)["status"] == 0
        coco_job = srv.submit(key, srv.upload(key, video), infer_fps=1).json()["job_id"]  # no embeddings
        srv.wait(key, coco_job)

        found = httpx.get(f"{srv.url}/search", params={"api_key": key, "q": "something blue", "limit": 2}).json()
        assert found["jobs_searched"] == 1
        assert sorted((h["job_id"], h["frame_offset"], h["time_offset"]) for h in found["hits"]) == [
            (job_id, 2, 1.0), (job_id, 6, 3.0)]
        assert found["hits"][0]["score"] > 0.9
        assert sorted((m["job_id"], m["start"], m["end"]) for m in found["moments"]) == [
            (job_id, 1.0, 2.0), (job_id, 3.0, 4.0)]
        other = httpx.get(f"{srv.url}/search", params={"api_key": rival, "q": "something blue"}).json()
        assert other == {"query": "something blue", "jobs_searched": 0, "hits": [], "moments": []}
        empty = httpx.get(f"{srv.url}/search", params={"api_key": key, "q": ""})
        assert empty.status_code == 400 and empty.json()["error"]["code"] == "invalid_request"
