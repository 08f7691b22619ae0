"""The ``vidinfer`` command: a thin shell over the engine, the service (``serve``, ``worker``) and its keys.

Every ``VidinferError`` becomes one line on stderr and the error's exit code;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import click

from vidinfer import __version__
from vidinfer.errors import EXIT_PARTIAL, InvalidInput, VidinferError


class Context:
    """What every command gets: settings, built once from the environment."""

    def __init__(self, debug: bool) -> None:
        from vidinfer.config import Settings

        self.debug = debug
        self.settings = Settings()

    def registry(self):  # noqa: ANN201 - avoids importing the engine for `--help`
        from vidinfer.models.registry import ModelRegistry

        return ModelRegistry.from_settings(self.settings)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vidinfer")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Run computer-vision models over video; serve a Roboflow-compatible API."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # httpx logs each request's whole URL at INFO: presigned input URLs carry credentials in their query
    logging.getLogger("httpx").setLevel(logging.WARNING)
    ctx.obj = Context(debug)


# -- infer -------------------------------------------------------------------------
def _parse_model_option(value: str, defaults: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``NAME`` or ``NAME:key=value,key=value`` -> (spec, inference_params)."""
    spec, _, rest = value.partition(":") if not Path(value).exists() else (value, "", "")
    params = dict(defaults)
    for item in filter(None, rest.split(",")):
        key, sep, raw = item.partition("=")
        if not sep:
            raise InvalidInput(f"model option {item!r} must be key=value (as in --model coco:confidence=0.5)")
        params[key.strip()] = _parse_value(key.strip(), raw.strip())
    return spec, params


def _parse_value(key: str, raw: str) -> Any:
    if key in ("classes", "prompts"):
        return [c for c in raw.split("|") if c]
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _results_key(spec: str) -> str:
    path = Path(spec)
    return path.stem if spec.lower().endswith(".onnx") else spec


@cli.command()
@click.argument("video")
@click.option("-m", "--model", "models", multiple=True, default=("coco",), show_default=True,
              metavar="NAME[:k=v,...]",
              help="A model: built-in name, registered name or .onnx path; repeatable. "
                   "Per-model params after a colon: coco:confidence=0.5,classes=person|car.")
@click.option("--fps", "infer_fps", default="5", show_default=True,
              help="Frames to infer per second of video (a number or num/den; below 1 allowed, e.g. 0.5).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the results JSON [default: VIDEO_NAME.results.json].")
@click.option("--conf", type=float, help="Confidence threshold for every model (0-1).")
@click.option("--iou", type=float, help="NMS IoU threshold for every model (0-1).")
@click.option("--start", type=float, help="Start of the range to infer, in seconds.")
@click.option("--end", type=float, help="End of the range to infer, in seconds.")
@click.option("--batch-size", type=click.IntRange(1, 256), help="Frames per inference batch.")
@click.option("--track", is_flag=True, help="Track detections (ByteTrack): a tracker_id each, and track summaries.")
@click.option("--line", "lines", multiple=True, metavar="X1,Y1,X2,Y2[:margin=N,samples=K]",
              help="Count crossings of this line (source pixels; repeatable). Implies --track. A crossing counts "
                   "once the box centre is N pixels (or N% of the box, default 25%) past the line on K samples in "
                   "a row (default 2).")
@click.option("--zone", "zones", multiple=True, metavar="X1,Y1,X2,Y2,X3,Y3,...",
              help="Count objects in this polygon and their dwell (repeatable). Implies --track.")
@click.option("--skip-static", "skip_static", type=float, default=None, metavar="THRESHOLD",
              help="Do not infer a sample whose 64x36 luma differs from the last inferred one by less than "
                   "THRESHOLD (mean absolute difference, 0-255; 2 suits a fixed camera): its entries repeat "
                   "that one's, with \"reused_from\": its sample index.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
def infer(obj: Context, video: str, models: Sequence[str], infer_fps: str, output: Path | None,
          conf: float | None, iou: float | None, start: float | None, end: float | None,
          batch_size: int | None, track: bool, lines: Sequence[str], zones: Sequence[str], skip_static: float | None,
          quiet: bool) -> None:
    """Run models over VIDEO (a path or an http(s) URL) and write the results JSON."""
    from vidinfer.core.sampling import check_skip_static, parse_fps
    from vidinfer.core.tracking import AnalysisOptions, analyse
    from vidinfer.inference import ModelRequest, check_analysis, resolve_runs

    defaults: dict[str, Any] = {}
    if conf is not None:
        defaults["confidence"] = conf
    if iou is not None:
        defaults["iou"] = iou
    requests = []
    for value in models:
        spec, params = _parse_model_option(value, defaults)
        requests.append(ModelRequest(_results_key(spec), spec, params))
    fps = parse_fps(infer_fps)
    skip_static = check_skip_static(skip_static)
    analysis = AnalysisOptions.parse("bytetrack" if track else None, lines, zones)
    if video.lower().startswith(("http://", "https://")):
        from vidinfer.urls import parse_http_url

        parse_http_url(video, "VIDEO")  # a malformed URL fails before any model loads
    output = output or Path(f"{Path(video.split('?')[0]).stem or 'video'}.results.json")
    _check_output(output)
    runs = resolve_runs(obj.registry(), requests)
    check_analysis(runs, analysis)
    with tempfile.TemporaryDirectory(prefix="vidinfer-") as tmp:
        path = _local_video(obj, video, Path(tmp), quiet)
        out = _run_with_progress(obj, path, runs, fps, start, end, batch_size, quiet, skip_static)
    analyse(out.results_json, analysis, float(fps))
    _write_json(output, out.results_json)
    _print_summary(out, output)
    for warning in out.result.warnings[:10]:
        click.echo(f"warning: {warning}", err=True)
    if out.result.partial or out.result.failed_frames:
        sys.exit(EXIT_PARTIAL)


def _local_video(obj: Context, video: str, tmp: Path, quiet: bool) -> str:
    if not video.lower().startswith(("http://", "https://")):
        return video
    from vidinfer.fetch import UrlPolicy, fetch_to_file

    dest = tmp / "input"
    if not quiet:
        click.echo(f"fetching {video}", err=True)
    settings = obj.settings
    fetch_to_file(video, dest, policy=UrlPolicy(allow_private=True), max_bytes=settings.max_upload_bytes,
                  timeout=settings.fetch_timeout, min_rate=settings.fetch_min_rate,
                  rate_window=settings.fetch_rate_window)
    return str(dest)


def _run_with_progress(obj: Context, path: str, runs: list, fps: Fraction, start: float | None,
                       end: float | None, batch_size: int | None, quiet: bool,
                       skip_static: float | None = None):  # noqa: ANN202
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from vidinfer.core.pipeline import expected_samples
    from vidinfer.core.sampling import check_range
    from vidinfer.inference import run_inference

    settings = obj.settings
    kwargs = dict(start=start, end=end, batch_size=batch_size or settings.batch_size,
                  decode_threads=settings.decode_threads, skip_static=skip_static)
    if quiet:
        return run_inference(path, runs, fps, **kwargs)
    columns = (TextColumn("[bold]inferring"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
               TimeRemainingColumn())
    console = _stderr_console()
    with Progress(*columns, transient=True, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("infer", total=None)

        def on_probe(info) -> None:  # noqa: ANN001
            s, e = check_range(start, end)
            bar.update(task, total=expected_samples(info, fps, s, e))

        return run_inference(path, runs, fps, on_probe=on_probe,
                             on_progress=lambda p: bar.update(task, completed=p.samples_done), **kwargs)


def _stderr_console():  # noqa: ANN202
    """Where progress bars go: shown on a terminal only (elsewhere rich leaves a blank line behind)."""
    from rich.console import Console

    return Console(stderr=True)


def _check_output(path: Path) -> None:
    """Fail before any work when ``path`` cannot be written: its folder (made if missing) must take a new
    file, as the atomic write needs one beside it."""
    above = next((p for p in path.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise InvalidInput(f"cannot write {path}: {above} is a file, not a folder", code="unwritable_output")
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "it is a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}", code="unwritable_output") from None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (a temporary file beside it, renamed over it): a crash or a full disk never leaves
    a half-written results file, nor destroys the previous one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w") as f:
            json.dump(data, f, separators=(",", ":"))
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}", code="unwritable_output") from None


def _print_summary(out, output: Path) -> None:  # noqa: ANN001
    from vidinfer.summary import findings

    result = out.result
    wall = result.stats.get("wall_seconds", 0.0)
    n = len(result)
    top = "; ".join(f.line() for f in findings(out.results_json)) or "no model"
    nulls = f", {result.failed_frames} null" if result.failed_frames else ""
    if "samples_reused" in result.stats:
        nulls += f" ({result.stats['samples_inferred']} inferred, {result.stats['samples_reused']} reused)"
    tracks = out.results_json.get("tracks")
    if tracks is not None:
        top += f"; {sum(len(t) for t in tracks.values())} tracks"
    for model_counts in (out.results_json.get("counts") or {}).values():
        top += "".join(f"; {line['name']} in {line['total_in']} out {line['total_out']}"
                       for line in model_counts["lines"])
    click.echo(f"{n} frames{nulls}; {top}; {wall:.1f} s wall, "
               f"{n / wall if wall else 0:.1f} frames/s -> {output}")


# -- probe -------------------------------------------------------------------------
@cli.command("probe")
@click.argument("video")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def probe_cmd(video: str, as_json: bool) -> None:
    """Print what vidinfer sees in VIDEO: codec, size, exact fps, frames, keyframes."""
    from vidinfer.core.video import probe

    data = probe(video).as_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        click.echo(f"{key:>18}: {value}")


# -- models ------------------------------------------------------------------------
@cli.group()
def models() -> None:
    """List and register models."""


@models.command("list")
@click.option("-v", "--verbose", is_flag=True, help="Also show source and licence.")
@click.pass_obj
def models_list(obj: Context, verbose: bool) -> None:
    """Show the models vidinfer can run."""
    registry = obj.registry()
    for entry in registry.entries():
        line = f"{entry.name:<28} {entry.kind:<8} {entry.target}"
        if verbose:
            try:
                info = registry.load_entry(entry).info
            except VidinferError as exc:  # e.g. clip before a CLIP export is configured
                click.echo(f"{line}\n{'':<28} not available: {exc.message}")
                continue
            line += (f"\n{'':<28} task={info.task} classes={len(info.classes)} input={info.input_size}"
                     f"\n{'':<28} source: {info.source}\n{'':<28} licence: {info.license}")
        click.echo(line)


@models.command("add")
@click.argument("name")
@click.argument("target", required=False)
@click.option("--builtin", help="Map NAME to a built-in model instead of a file.")
@click.pass_obj
def models_add(obj: Context, name: str, target: str | None, builtin: str | None) -> None:
    """Register TARGET (an .onnx file, or a CLIP export folder) as NAME, e.g. people, or clip FOLDER."""
    if bool(target) == bool(builtin):
        raise InvalidInput("give either a model file or --builtin NAME")
    entry, info = obj.registry().add(name, builtin or target, builtin=bool(builtin))  # type: ignore[arg-type]
    click.echo(f"added {entry.name}: {info.task}, {len(info.classes)} classes, input {info.input_size}")


@models.command("remove")
@click.argument("name")
@click.pass_obj
def models_remove(obj: Context, name: str) -> None:
    """Forget a registered model."""
    obj.registry().remove(name)
    click.echo(f"removed {name}")


#: seconds an idle keep-alive connection stays open: longer than clients keep theirs (httpx: 5 s),
#: so a client never sends a request on a connection the server is closing at that moment
KEEP_ALIVE = 65

# -- the service --------------------------------------------------------------------
@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--workers", type=click.IntRange(0, 256),
              help="Worker processes running jobs [default: VIDINFER_WORKERS or 1]; 0 runs the API alone.")
@click.pass_obj
def serve(obj: Context, host: str, port: int, workers: int | None) -> None:
    """Run the API and its workers on this machine (SQLite and local files under VIDINFER_DATA_DIR)."""
    import uvicorn

    from vidinfer.api.app import create_app
    from vidinfer.jobs.pool import WorkerPool
    from vidinfer.jobs.store import JobStore

    settings = obj.settings
    if not settings.public_url:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        settings = settings.model_copy(update={"public_url": f"http://{shown}:{port}"})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(settings.database)
    if settings.broker_url:
        _serve_distributed(settings, store, host, port)
        return
    requeued, failed = store.requeue_running(settings.max_attempts)
    if requeued or failed:
        click.echo(f"recovered jobs interrupted by the last stop: {requeued} requeued, {failed} failed", err=True)
    pool = WorkerPool(settings, settings.workers if workers is None else workers)
    pool.start()
    click.echo(f"vidinfer {__version__} serving {settings.public_url} (data: {settings.data_dir}, "
               f"workers: {pool.count})", err=True)
    logging.getLogger("vidinfer.serve").debug("HTTP stack: %s", _http_stack())
    try:
        uvicorn.run(create_app(settings, store), host=host, port=port, log_level="warning",
                    timeout_keep_alive=KEEP_ALIVE)
    finally:
        pool.stop()


def _http_stack() -> str:
    """What uvicorn's "auto" runs on: uvloop and httptools where installed (the server extra), else
    asyncio and h11, which cost a status poll more CPU (bench/README.md)."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{loop} event loop, {'httptools' if importlib.util.find_spec('httptools') else 'h11'} parser"


def _serve_distributed(settings, store, host: str, port: int) -> None:  # noqa: ANN001
    """The API alone: jobs go to `vidinfer worker` processes through the broker."""
    import threading

    import uvicorn

    from vidinfer.api.app import create_app
    from vidinfer.jobs.distributed import dispatch, fail_stalled, make_celery, redispatch_stale

    app = make_celery(settings)
    stop = threading.Event()

    def sweep() -> None:
        while not stop.wait(settings.redispatch_seconds / 2):
            try:
                redispatch_stale(app, store, older_than=settings.redispatch_seconds)
            except Exception as exc:  # noqa: BLE001 - the broker may be restarting; try again later
                logging.getLogger("vidinfer").warning("re-dispatching queued jobs failed: %s", exc)
            try:
                fail_stalled(store, settings)
            except Exception as exc:  # noqa: BLE001 - the database may be restarting; try again later
                logging.getLogger("vidinfer").warning("looking for stalled jobs failed: %s", exc)

    threading.Thread(target=sweep, name="vidinfer-sweep", daemon=True).start()
    click.echo(f"vidinfer {__version__} serving {settings.public_url} (distributed: broker "
               f"{_redact(settings.broker_url)}, queue {settings.queue})", err=True)
    try:
        uvicorn.run(create_app(settings, store, dispatch=lambda job_id: dispatch(app, job_id)),
                    host=host, port=port, log_level="warning", timeout_keep_alive=KEEP_ALIVE)
    finally:
        stop.set()


def _redact(url: str) -> str:
    """A URL without its password, for logs."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


@cli.command()
@click.option("-c", "--concurrency", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Worker processes on this machine (each runs one chunk at a time).")
@click.option("--pool", type=click.Choice(["prefork", "solo"]), default="prefork", show_default=True,
              help="solo: one process, no fork (one per GPU).")
@click.pass_obj
def worker(obj: Context, concurrency: int, pool: str) -> None:
    """Run jobs from the broker (VIDINFER_BROKER_URL) on this machine: the distributed mode's workers."""
    settings = obj.settings
    if not settings.broker_url:
        raise InvalidInput("vidinfer worker needs VIDINFER_BROKER_URL (e.g. amqp://guest:guest@host:5672//); "
                           "without a broker, `vidinfer serve` runs its own workers")
    from vidinfer.jobs.distributed import make_celery

    app = make_celery(settings)
    click.echo(f"vidinfer worker: {concurrency} x {pool} on queue {settings.queue} "
               f"({_redact(settings.broker_url)})", err=True)
    app.worker_main(["worker", f"--concurrency={concurrency}", f"--pool={pool}", "-Q", settings.queue,
                     "--loglevel=INFO", "--without-gossip", "--without-mingle", "-n", f"vidinfer-{os.getpid()}@%h"])


@cli.group()
def keys() -> None:
    """Create, list and revoke API keys."""


def _store(obj: Context):  # noqa: ANN202
    from vidinfer.jobs.store import JobStore

    obj.settings.data_dir.mkdir(parents=True, exist_ok=True)
    return JobStore(obj.settings.database)


@keys.command("create")
@click.option("-w", "--workspace", required=True, help="The workspace the key acts for (created if new).")
@click.pass_obj
def keys_create(obj: Context, workspace: str) -> None:
    """Print a new API key for WORKSPACE (only its hash is stored: keep it)."""
    click.echo(_store(obj).create_key(workspace))


@keys.command("list")
@click.pass_obj
def keys_list(obj: Context) -> None:
    """List keys by workspace and prefix."""
    for key in _store(obj).list_keys():
        state = "revoked" if key["revoked"] else "active"
        click.echo(f"{key['workspace']:<24} {key['prefix']}...  {state}  "
                   f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(key['created_at']))}")


@keys.command("revoke")
@click.argument("prefix")
@click.pass_obj
def keys_revoke(obj: Context, prefix: str) -> None:
    """Revoke the key starting with PREFIX (as `keys list` shows it)."""
    n = _store(obj).revoke_key(prefix)
    if not n:
        raise InvalidInput(f"no key with prefix {prefix!r}")
    click.echo(f"revoked {n} key(s)")


@cli.command("jobs")
@click.option("-w", "--workspace", required=True)
@click.option("-n", "--limit", default=20, show_default=True)
@click.pass_obj
def jobs_cmd(obj: Context, workspace: str, limit: int) -> None:
    """List a workspace's latest jobs."""
    for job in _store(obj).list(workspace, limit=limit):
        err = f"  {job.error_code}: {job.error_message}" if job.error_code else ""
        click.echo(f"{job.id}  {job.state.value:<9} {job.frames_done}/{job.frames_total or '?'}  "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(job.created_at))}{err}")


# -- demo --------------------------------------------------------------------------
@cli.command()
@click.option("-o", "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"),
              show_default=True)
@click.pass_obj
def demo(obj: Context, output_dir: Path) -> None:
    """Build a short video from real photos, detect what is in it, and render a preview."""
    from vidinfer.demo import run_demo

    run_demo(obj.registry(), output_dir, echo=lambda s: click.echo(s, err=True))


# -- search ------------------------------------------------------------------------
@cli.command("search")
@click.argument("args", nargs=-1, required=True)
@click.option("-t", "--text", help="Rank moments by how well their best frame matches this text (CLIP runs).")
@click.option("-c", "--class", "classes", multiple=True, help="Only predictions of this class (repeatable).")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=0.0, help="Only predictions this sure.")
@click.option("--track-id", "track_ids", type=int, multiple=True, help="Only this track (repeatable; tracked runs).")
@click.option("--zone", help="Only predictions whose centre is inside: X1,Y1,X2,Y2,X3,Y3,... or a zone's name.")
@click.option("--start", type=float, help="Only samples from this second.")
@click.option("--end", type=float, help="Only samples before this second.")
@click.option("--gap", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Seconds a gap between matching samples may last within one moment (beyond one sample).")
@click.option("-m", "--model", "model_name", default="clip", show_default=True,
              help="With --text: the CLIP model that made the embeddings (built-in clip, or a registered name).")
@click.option("-k", "--top", "top_k", default=10, show_default=True, type=click.IntRange(1, 100_000),
              help="How many moments to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one object per moment.")
@click.pass_obj
def search_cmd(obj: Context, args: Sequence[str], text: str | None, classes: Sequence[str], min_confidence: float,
               track_ids: Sequence[int], zone: str | None, start: float | None, end: float | None, gap: float,
               model_name: str, top_k: int, as_json: bool) -> None:
    """Find the moments of RESULTS files whose predictions match the filters, best first.

    Matching samples that follow one another make one moment (start, end, best frame, score). With
    --text (or a first argument that is not a file: `vidinfer search "a red car" RESULTS...`), moments of
    runs with a CLIP model rank by their best frame's similarity to the text; else by their best
    confidence. With no filter, any prediction matches."""
    from vidinfer.moments import check_filters, find_moments
    from vidinfer.search import load_results

    paths = list(args)
    if text is None and paths and not Path(paths[0]).is_file() and len(paths) > 1:
        text = paths.pop(0)  # the older form: TEXT RESULTS...
    filters = check_filters(classes, min_confidence, track_ids, zone, start, end, gap)
    query = None
    if text is not None:
        if not text.strip():
            raise InvalidInput("the search text is empty")
        model = obj.registry().load(model_name)
        if not hasattr(model, "embed_text"):
            raise InvalidInput(f"{model_name} is not a CLIP model: search needs the one that made the embeddings")
        (query,) = model.embed_text([text])
    moments = find_moments([(p, load_results(Path(p))) for p in paths], filters, query=query, limit=top_k)
    if as_json:
        click.echo(json.dumps([m.as_dict() for m in moments], indent=2))
        return
    for m in moments:
        seen = ", ".join(m.classes) + (f"  tracks {', '.join(map(str, m.track_ids))}" if m.track_ids else "")
        click.echo(f"{m.score:.4f}  {m.start:>9.3f} - {m.end:<9.3f} s  best frame {m.best_frame:<7} {m.source}"
                   + (f"  {seen}" if seen else ""))


# -- render ------------------------------------------------------------------------
@cli.command("render")
@click.argument("video")
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The MP4 to write [default: VIDEO_NAME.rendered.mp4].")
@click.option("--start", type=float, help="Start of the range to render, in seconds.")
@click.option("--end", type=float, help="End of the range to render, in seconds.")
@click.option("--blur", "blur", multiple=True, metavar="CLASS",
              help="Blur the boxes of CLASS (repeatable; e.g. person, face from gaze results).")
@click.option("-m", "--model", "models", multiple=True, metavar="KEY",
              help="Draw only this results key (repeatable) [default: every model in the file].")
@click.option("--force", is_flag=True, help="Draw results made from another video (another size or length).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
def render_cmd(obj: Context, video: str, results: Path, output: Path | None, start: float | None,
               end: float | None, blur: Sequence[str], models: Sequence[str], force: bool, quiet: bool) -> None:
    """Draw the predictions of RESULTS onto VIDEO: an H.264 MP4 with the source's audio, fps and frames."""
    from vidinfer.render import render_video

    try:
        data = json.loads(results.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{results} is not a results JSON file: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{results} is not a results JSON file (expected an object)")
    name = Path(video.split("?")[0]).stem or "video"
    output = output or Path(f"{name}.rendered.mp4")
    _check_output(output)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vidinfer-") as tmp:
        path = _local_video(obj, video, Path(tmp), quiet)
        kwargs = dict(models=models or None, blur=blur, start=start, end=end, force=force,
                      threads=obj.settings.decode_threads)
        if quiet:
            stats = render_video(path, data, output, **kwargs)
        else:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            columns = (TextColumn("[bold]rendering"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
                       TimeRemainingColumn())
            console = _stderr_console()
            with Progress(*columns, transient=True, console=console, disable=not console.is_terminal) as bar:
                task = bar.add_task("render", total=None)
                stats = render_video(path, data, output,
                                     on_progress=lambda done, total: bar.update(task, completed=done, total=total),
                                     **kwargs)
    wall = time.monotonic() - t0
    for warning in stats.warnings:
        click.echo(f"warning: {warning}", err=True)
    audio = {"copy": "audio copied", "aac": "audio re-encoded to AAC"}.get(stats.audio or "", "no audio")
    click.echo(f"{stats.frames} frames, {audio}; {wall:.1f} s wall, "
               f"{stats.frames / wall if wall else 0:.1f} frames/s -> {output}")


# -- summary -----------------------------------------------------------------------
@cli.command("summary")
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a chart of counts over time to this PNG file.")
def summary_cmd(results: Path, png: Path | None) -> None:
    """Print what RESULTS holds: counts per class, per line, per zone and per minute."""
    from vidinfer.summary import print_summary, write_chart

    try:
        data = json.loads(results.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{results} is not a results JSON file: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("time_offset"), list):
        raise InvalidInput(f"{results} is not a vidinfer results file (no time_offset list)")
    from rich.console import Console

    print_summary(data, Console())
    if png is not None:
        write_chart(data, png)
        click.echo(f"chart -> {png}", err=True)


# -- diff --------------------------------------------------------------------------
@cli.command("diff")
@click.argument("a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model-a", metavar="KEY", help="A's detection column [default: its only one].")
@click.option("--model-b", metavar="KEY", help="B's detection column [default: its only one].")
@click.option("--iou", default=0.5, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="Boxes of one class overlapping at least this much are the same object.")
@click.option("--top", default=8, show_default=True, type=click.IntRange(0, 1000),
              help="How many samples to list where A and B disagree most.")
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON (README: the diff document).")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a chart of disagreements per minute; with --video, a contact sheet NAME.sheet.png.")
@click.option("--video", help="The video both ran on: --png then draws the top disagreements from it.")
@click.option("--force", is_flag=True, help="Compare results made from different videos.")
@click.pass_obj
def diff_cmd(obj: Context, a: Path, b: Path, model_a: str | None, model_b: str | None, iou: float, top: int,
             as_json: bool, png: Path | None, video: str | None, force: bool) -> None:
    """Where two runs on one video disagree: per class matched / only in A / only in B, per minute, worst samples."""
    from vidinfer.diff import compare, print_diff, sheet_path, write_chart, write_contact_sheet
    from vidinfer.search import load_results

    if video is not None and png is None:
        raise InvalidInput("--video draws the contact sheet of --png: give --png too")
    data_a, data_b = load_results(a), load_results(b)
    doc = compare(data_a, data_b, model_a=model_a, model_b=model_b, iou=iou, top=top, force=force,
                  sources=(str(a), str(b)))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        from rich.console import Console

        print_diff(doc, Console())
    if png is not None:
        write_chart(doc, png)
        click.echo(f"chart -> {png}", err=True)
        if video is not None:
            with tempfile.TemporaryDirectory(prefix="vidinfer-") as tmp:
                path = _local_video(obj, video, Path(tmp), quiet=True)
                if data_a.get("video") is not None:
                    from vidinfer.core.video import probe
                    from vidinfer.render import check_video

                    warning = check_video(data_a, probe(path), force)
                    if warning:
                        click.echo(f"warning: {warning}", err=True)
                sheet = sheet_path(png)
                drawn = write_contact_sheet(doc, data_a, data_b, path, sheet, threads=obj.settings.decode_threads)
            click.echo(f"contact sheet ({drawn} samples, A orange, B blue) -> {sheet}" if drawn
                       else "no disagreements: no contact sheet", err=True)


# -- export ------------------------------------------------------------------------
_EXPORT_HELP = """Write RESULTS in another format (-o OUT, default: RESULTS' name with the format's extension).

\b
  jsonl    one line per sample: offsets and each model's entry
  csv      one row per prediction: time, frame, model, class, class_id, confidence,
           x, y, width, height (box centre and size), tracker_id, text
  parquet  the same columns (needs pyarrow: pip install 'vidinfer[export]')
  mot      MOTChallenge frame,id,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1
           (frames from 1; tracked results only: infer with --track)
  coco     COCO JSON: a video, an image per sample, annotations with polygons and keypoints
  cvat     CVAT for video 1.1 XML: tracks with interpolation keyframes
  webvtt   captions per second of what is in view: classes and counts, OCR text
  srt      the same captions as SubRip
"""


@cli.command("export", help=_EXPORT_HELP)
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-f", "--format", "fmt", required=True, type=click.Choice(["jsonl", "csv", "parquet", "mot", "coco",
              "cvat", "webvtt", "srt"]), help="The format to write.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The file to write [default: RESULTS stem + the format's extension, e.g. x.results.csv].")
@click.option("-m", "--model", "model", metavar="KEY",
              help="Export only this model column (mot, coco, cvat: default the only model with boxes).")
def export_cmd(results: Path, fmt: str, output: Path | None, model: str | None) -> None:
    """Write RESULTS in another format."""
    from vidinfer.export import FORMATS, export
    from vidinfer.search import load_results

    data = load_results(results)
    output = output or results.with_name(results.stem + FORMATS[fmt])
    if output.resolve() == results.resolve():
        raise InvalidInput(f"{output} is the results file itself: give another -o", code="unwritable_output")
    _check_output(output)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            export(data, fmt, f, model)
        tmp.replace(output)
    except OSError as exc:
        raise InvalidInput(f"cannot write {output}: {exc.strerror or exc}", code="unwritable_output") from None
    finally:
        tmp.unlink(missing_ok=True)
    click.echo(f"{fmt} -> {output}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: map vidinfer errors to one line and an exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="vidinfer", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except VidinferError as exc:
        if debug:
            raise
        # one line, whatever a file name holds
        message = exc.message.replace("\r", "\\r").replace("\n", "\\n")
        click.echo(f"error: {message}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
