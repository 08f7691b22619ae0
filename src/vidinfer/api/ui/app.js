// vidinfer's web UI: sign in with a key, upload, run models, watch progress, play with predictions drawn.
"use strict";

const $ = (sel) => document.querySelector(sel);
const RESERVED = new Set(["frame_offset", "time_offset", "video", "tracks", "counts"]);
let key = localStorage.getItem("vidinfer-key") || "";
let selectedJob = null;
// the open job: {job, results, samples, classes, timeline, unplayable, burntIn}; burntIn: the video playing is a
// render with the predictions drawn into its pictures, so the overlay draws nothing over it
let player = null;
let opening = 0; // counts openJob calls: answers for a job that is no longer the one opening are dropped
let openingJob = null; // the job being opened, so the job list's refresh does not open it again meanwhile

// -- the API -----------------------------------------------------------------------------------
function withKey(path) {
  return `${path}${path.includes("?") ? "&" : "?"}api_key=${encodeURIComponent(key)}`;
}

async function api(path, options = {}) {
  const response = await fetch(withKey(path), options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const err = body.error || {};
    throw new Error(err.message ? `${err.message} (${err.code})` : `HTTP ${response.status}`);
  }
  return body;
}

function putWithProgress(url, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => (xhr.status < 400 ? resolve() : reject(new Error(`upload failed: HTTP ${xhr.status} ${xhr.responseText}`)));
    xhr.onerror = () => reject(new Error("upload failed: the connection broke"));
    xhr.send(file);
  });
}

// -- sign in -----------------------------------------------------------------------------------
async function signIn(candidate) {
  key = candidate;
  const who = await api("/", { method: "POST" });
  localStorage.setItem("vidinfer-key", key);
  $("#who").textContent = `workspace ${who.workspace}`;
  $("#who").hidden = $("#signout").hidden = false;
  $("#signin").hidden = true;
  $("#app").hidden = false;
  await loadModels();
  await refreshJobs();
}

$("#signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("#signin-error").textContent = "";
  try {
    await signIn($("#key").value.trim());
  } catch (err) {
    key = "";
    $("#signin-error").textContent = `Cannot sign in: ${err.message}`;
  }
});

$("#signout").addEventListener("click", () => {
  localStorage.removeItem("vidinfer-key");
  location.reload();
});

// -- new job -----------------------------------------------------------------------------------
let file = null;

async function loadModels() {
  const { models } = await api("/models");
  $("#models").innerHTML = "";
  for (const m of models) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = JSON.stringify({ model_id: m.model_id, model_version: m.model_version, inference_type: m.inference_type });
    box.dataset.model = m.model_id;
    box.checked = m.model_id === "coco";
    label.append(box, ` ${m.model_id}${m.source === "workspace" ? `/${m.model_version}` : ""}`);
    label.title = `${m.inference_type} (${m.source})`;
    $("#models").append(label);
  }
}

function chooseFile(f) {
  file = f;
  $("#drop-text").textContent = f ? `${f.name} (${(f.size / 1e6).toFixed(1)} MB)` : "Drop a video here, or click to choose one";
  $("#start").disabled = !f;
}

$("#file").addEventListener("change", (e) => chooseFile(e.target.files[0] || null));
const drop = $("#drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) chooseFile(e.dataTransfer.files[0]);
});

$("#start").addEventListener("click", async () => {
  const models = [...document.querySelectorAll("#models input:checked")].map((b) => JSON.parse(b.value));
  const message = $("#job-message");
  message.className = "";
  if (!models.length) { message.textContent = "Choose at least one model."; return; }
  $("#start").disabled = true;
  try {
    message.textContent = "Uploading…";
    const { signed_url } = await api("/video_upload_signed_url", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ file_name: file.name }),
    });
    await putWithProgress(signed_url, file, (f) => { $("#upload-progress").style.width = `${(f * 100).toFixed(1)}%`; });
    $("#upload-progress").style.width = "100%";
    const job = await api("/videoinfer", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ input_url: signed_url, infer_fps: Number($("#fps").value), models }),
    });
    message.textContent = `Job ${job.job_id.slice(0, 8)} started.`;
    selectedJob = job.job_id;
    await refreshJobs();
  } catch (err) {
    message.className = "error";
    message.textContent = err.message;
  } finally {
    $("#start").disabled = !file;
  }
});

// -- jobs --------------------------------------------------------------------------------------
async function refreshJobs() {
  const { jobs } = await api("/videoinfers?limit=50");
  const body = $("#jobs tbody");
  body.innerHTML = "";
  for (const job of jobs) {
    const row = document.createElement("tr");
    row.dataset.job = job.job_id;
    row.dataset.state = job.state;
    const pct = Math.round(job.progress * 100);
    const eta = job.eta_seconds != null ? `, ${Math.ceil(job.eta_seconds)} s left` : "";
    const why = job.error ? ` — ${job.error.message}` : "";
    row.innerHTML = `<td><code>${job.job_id.slice(0, 8)}</code></td>
      <td class="state-${job.state}" title="${escapeHtml(why)}">${job.state}${escapeHtml(why.slice(0, 60))}</td>
      <td><div class="bar"><div style="width:${pct}%"></div></div>${pct}%${eta}</td>
      <td>${escapeHtml((job.models || []).join(", "))}</td>`;
    row.addEventListener("click", () => openJob(job.job_id));
    body.append(row);
  }
  const current = jobs.find((j) => j.job_id === selectedJob);
  if (current && current.state === "done" && openingJob !== current.job_id
      && (!player || player.job.job_id !== current.job_id)) openJob(current.job_id);
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

setInterval(() => { if (key && !$("#app").hidden) refreshJobs().catch(() => {}); }, 2000);

// -- the player --------------------------------------------------------------------------------
async function openJob(jobId) {
  const token = ++opening;
  selectedJob = openingJob = jobId;
  resetPlayer();
  $("#player").hidden = false;
  $("#player-job").textContent = jobId.slice(0, 8);
  $("#player-state").textContent = "";
  try {
    const job = await api(`/videoinfer?job_id=${encodeURIComponent(jobId)}`);
    if (token !== opening) return;
    $("#player-state").textContent = job.state;
    if (job.state !== "done") return;
    const results = await (await fetch(job.output_signed_url)).json();
    if (token !== opening) return;
    player = { job, results, ...index(results) };
    $("#download-results").href = job.output_signed_url;
    $("#download-results").hidden = $("#render").hidden = false;
    $("#exports").hidden = false;
    $("#video").src = job.video_url;
    drawTimeline();
    drawLegend();
    showMomentFilters();
    document.body.dataset.player = "ready";
  } catch (err) {
    if (token === opening) $("#player-state").textContent = `cannot open the job: ${err.message}`;
  } finally {
    if (token === opening) openingJob = null;
  }
}

// Nothing of the job shown before stays: not its boxes, its video, its timeline, legend or links.
function resetPlayer() {
  player = null;
  delete document.body.dataset.player;
  const video = $("#video");
  video.pause();
  video.removeAttribute("src");
  video.load(); // drops the last picture
  $(".stage").hidden = false;
  for (const canvas of [$("#overlay"), $("#timeline")]) {
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  }
  $("#legend").innerHTML = "";
  $("#download-results").removeAttribute("href");
  $("#download-results").hidden = $("#render").hidden = $("#download-render").hidden = true;
  $("#render-state").textContent = "";
  resetExport();
  $("#exports").hidden = true;
  $("#moments").hidden = true;
  $("#moments-list").innerHTML = "";
  $("#moments-state").textContent = "";
  momentEnd = null;
  videoMessage(null);
}

// -- a video this browser cannot play: say so, and offer a copy it plays -------------------------
const H264 = 'video/mp4; codecs="avc1.42E01E"';

function videoMessage(text, { offer = false, error = false } = {}) {
  $("#video-message").hidden = !text;
  $("#video-message").classList.toggle("error", error);
  $("#video-message-text").textContent = text || "";
  $("#preview").hidden = !offer;
}

// An AVI, MPEG-4 Part 2, HEVC... fails with MEDIA_ERR_SRC_NOT_SUPPORTED (or DECODE); a video track the browser
// cannot decode beside audio it can plays as sound only (no width). The job's predictions are all there, so a
// render of the job (H.264, the predictions drawn in, made by a worker) is offered, or played if one is made.
async function cannotPlay() {
  const p = player;
  if (!p || p.unplayable) return;
  p.unplayable = true;
  $(".stage").hidden = true; // not a black player at 0:00
  videoMessage("This browser cannot play this video: browsers play MP4 (H.264), WebM and Ogg, not AVI, MPEG-4 "
    + "Part 2, HEVC or many camera formats. The predictions are below, and a copy the browser plays can be made.",
  { offer: true });
  try {
    const render = await api(`/videoinfer/render?job_id=${encodeURIComponent(p.job.job_id)}`);
    if (p === player && render.status <= 1 && wholeVideo(render.options)) showRender(render);
  } catch (err) {
    // no render of this job yet (render_not_found): the button makes one
  }
}

// a render made with no options: every model's predictions over the whole video, nothing blurred
function wholeVideo(options) {
  const o = options || {};
  return o.start == null && o.end == null && !(o.blur || []).length && !(o.models || []).length;
}

function playPreview(url) {
  player.burntIn = true;
  $("#video").src = url;
  $(".stage").hidden = false;
  if ($("#video").canPlayType(H264)) {
    videoMessage("This browser cannot play the original video: playing a copy made for it (H.264 MP4), "
      + "with the predictions drawn into the picture.");
  } else {
    videoMessage("This browser cannot play H.264 video either: download the rendered MP4 below to watch it.",
      { error: true });
  }
}

$("#preview").addEventListener("click", () => $("#render").click());

$("#video").addEventListener("error", () => {
  const video = $("#video");
  const code = video.error ? video.error.code : MediaError.MEDIA_ERR_ABORTED;
  if (!player || !video.getAttribute("src") || code === MediaError.MEDIA_ERR_ABORTED) return;
  if (player.burntIn) {
    videoMessage("This browser could not play the copy made for it (H.264 MP4) either: download it below.",
      { error: true });
  } else {
    cannotPlay();
  }
});

// -- rendering: the job's video with its predictions drawn, made by a worker -----------------------
async function showRender(render) {
  const link = $("#download-render");
  const state = $("#render-state");
  const p = player;
  if (!p || p.job.job_id !== render.job_id) return;
  const preview = p.unplayable && !p.burntIn;
  if (render.status === 0) {
    link.href = render.rendered_signed_url;
    link.hidden = false;
    state.textContent = "";
    if (preview && wholeVideo(render.options)) playPreview(render.rendered_signed_url);
    else if (preview) renderFailed("the render made covers part of the video only: make the copy again");
    return;
  }
  link.hidden = true;
  if (render.status > 1) {
    renderFailed(render.error ? render.error.message : "the render failed");
    return;
  }
  state.className = "";
  state.textContent = `rendering… ${Math.round((render.progress || 0) * 100)}%`;
  if (preview) videoMessage(`Making a copy this browser plays… ${Math.round((render.progress || 0) * 100)}%`);
  setTimeout(async () => {
    if (p !== player) return;
    try {
      await showRender(await api(`/videoinfer/render?job_id=${encodeURIComponent(render.job_id)}`));
    } catch (err) {
      renderFailed(err.message);
    }
  }, 1000);
}

function renderFailed(message) {
  $("#render-state").className = "error";
  $("#render-state").textContent = message;
  if (player && player.unplayable && !player.burntIn) {
    videoMessage(`This browser cannot play this video, and the copy for it could not be made: ${message}`,
      { offer: true, error: true });
  }
}

$("#render").addEventListener("click", async () => {
  if (!player) return;
  try {
    await showRender(await api(`/videoinfer/render?job_id=${encodeURIComponent(player.job.job_id)}`, { method: "POST" }));
  } catch (err) {
    renderFailed(err.message);
  }
});

// Exports (GET /videoinfer/{job_id}/export, see the README's Export): the results in another tool's format
const EXPORT_EXTENSIONS = { csv: "csv", jsonl: "jsonl", parquet: "parquet", coco: "coco.json", cvat: "cvat.xml",
  mot: "mot.txt", webvtt: "vtt", srt: "srt" };

function resetExport() {
  const link = $("#download-export");
  link.hidden = true;
  link.removeAttribute("href");
  $("#export-state").textContent = "";
}

$("#export").addEventListener("click", async () => {
  if (!player) return;
  const jobId = player.job.job_id;
  const format = $("#export-format").value;
  resetExport();
  try {
    const body = await api(`/videoinfer/${encodeURIComponent(jobId)}/export?format=${encodeURIComponent(format)}`);
    if (!player || player.job.job_id !== jobId) return;
    const link = $("#download-export");
    link.href = body.export_signed_url;
    link.download = `${jobId.slice(0, 8)}.${EXPORT_EXTENSIONS[format]}`;
    link.textContent = `Download ${format}`;
    link.hidden = false;
  } catch (err) {
    $("#export-state").textContent = err.message;
  }
});

// samples: [{time, items: [{model, pred, image}]}]; classes: {name: count}
function index(results) {
  const keys = Object.keys(results).filter((k) => !RESERVED.has(k) && Array.isArray(results[k]));
  const classes = {};
  const samples = results.time_offset.map((time, i) => {
    const items = [];
    for (const k of keys) {
      const entry = results[k][i];
      if (!entry || !Array.isArray(entry.predictions)) continue;
      for (const pred of entry.predictions) {
        const box = pred.face || pred;
        if (box.x == null) continue;
        const name = pred.face ? "face" : pred.class;
        classes[name] = (classes[name] || 0) + 1;
        items.push({ model: k, pred, box, name, image: entry.image });
      }
    }
    return { time, items };
  });
  return { samples, classes };
}

function colour(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h}, 85%, 50%)`;
}

function sampleAt(t) {
  const s = player.samples;
  let lo = 0, hi = s.length - 1, best = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (s[mid].time <= t + 1e-6) { best = mid; lo = mid + 1; } else hi = mid - 1;
  }
  return best;
}

function drawOverlay() {
  const video = $("#video"), canvas = $("#overlay");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height); // every frame starts blank: no box outlives its frame or job
  if (player && video.videoWidth && !player.burntIn) {
    canvas.width = video.clientWidth;
    canvas.height = video.clientHeight;
    // the video is letterboxed inside its element: map source pixels to the shown picture
    const scale = Math.min(canvas.width / video.videoWidth, canvas.height / video.videoHeight);
    const ox = (canvas.width - video.videoWidth * scale) / 2, oy = (canvas.height - video.videoHeight * scale) / 2;
    const i = sampleAt(video.currentTime);
    if (i >= 0) {
      ctx.lineWidth = 2;
      ctx.font = "13px system-ui, sans-serif";
      for (const { box, name, pred, image } of player.samples[i].items) {
        const sx = scale * video.videoWidth / image.width, sy = scale * video.videoHeight / image.height;
        const x = ox + (box.x - box.width / 2) * sx, y = oy + (box.y - box.height / 2) * sy;
        ctx.strokeStyle = ctx.fillStyle = colour(name);
        ctx.strokeRect(x, y, box.width * sx, box.height * sy);
        const label = `${name}${pred.tracker_id != null ? ` #${pred.tracker_id}` : ""} ${(box.confidence ?? 0).toFixed(2)}`;
        const w = ctx.measureText(label).width + 6;
        ctx.fillRect(x, Math.max(0, y - 17), w, 17);
        ctx.fillStyle = "#fff";
        ctx.fillText(label, x + 3, Math.max(12, y - 4));
      }
    }
  }
  if (player) drawPlayhead();
  requestAnimationFrame(drawOverlay);
}
requestAnimationFrame(drawOverlay);

function topClasses() {
  return Object.entries(player.classes).sort((a, b) => b[1] - a[1]).slice(0, 8).map(([n]) => n);
}

function duration() {
  const v = $("#video");
  const last = player.samples.length ? player.samples[player.samples.length - 1].time : 0;
  return Number.isFinite(v.duration) && v.duration > 0 ? v.duration : Math.max(last, 1);
}

function drawTimeline() {
  const canvas = $("#timeline");
  canvas.width = canvas.clientWidth;
  const ctx = canvas.getContext("2d");
  const names = topClasses(), rowH = Math.max(10, Math.floor(canvas.height / Math.max(1, names.length)));
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  names.forEach((name, row) => {
    ctx.fillStyle = colour(name);
    for (const s of player.samples) {
      const n = s.items.filter((it) => it.name === name).length;
      if (!n) continue;
      const x = (s.time / duration()) * canvas.width;
      ctx.globalAlpha = Math.min(1, 0.35 + 0.2 * n);
      ctx.fillRect(x, row * rowH + 1, Math.max(2, canvas.width / player.samples.length), rowH - 2);
    }
    ctx.globalAlpha = 1;
    ctx.fillStyle = "#333";
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillText(name, 4, row * rowH + rowH - 3);
  });
  player.timeline = ctx.getImageData(0, 0, canvas.width, canvas.height);
}

function drawPlayhead() {
  const canvas = $("#timeline");
  if (!player.timeline || canvas.width !== player.timeline.width) return;
  const ctx = canvas.getContext("2d");
  ctx.putImageData(player.timeline, 0, 0);
  const x = ($("#video").currentTime / duration()) * canvas.width;
  ctx.fillStyle = "#000";
  ctx.fillRect(x, 0, 2, canvas.height);
}

$("#timeline").addEventListener("click", (e) => {
  if (!player) return;
  const rect = e.target.getBoundingClientRect();
  $("#video").currentTime = ((e.clientX - rect.left) / rect.width) * duration();
});
$("#video").addEventListener("loadedmetadata", () => {
  if (!player) return;
  if (!$("#video").videoWidth) cannotPlay(); // sound only: the picture's codec is not one this browser plays
  drawTimeline();
});
window.addEventListener("resize", () => player && drawTimeline());

function drawLegend() {
  $("#legend").innerHTML = topClasses()
    .map((n) => `<span data-class="${escapeHtml(n)}"><i style="background:${colour(n)}"></i>${escapeHtml(n)} ${player.classes[n]}</span>`)
    .join("");
}

// -- moments: when the job's predictions match a class and a confidence (GET /search) ----------------
let momentEnd = null; // playing a moment: pause at its end

function showMomentFilters() {
  const select = $("#moments-class");
  select.innerHTML = '<option value="">any</option>' + Object.keys(player.classes).sort()
    .map((n) => `<option value="${escapeHtml(n)}">${escapeHtml(n)}</option>`).join("");
  $("#moments").hidden = false;
}

async function findMoments() {
  const p = player;
  if (!p) return;
  const params = new URLSearchParams({ job_id: p.job.job_id, limit: "50",
                                       min_confidence: $("#moments-confidence").value || "0" });
  if ($("#moments-class").value) params.append("class", $("#moments-class").value);
  $("#moments-state").textContent = "Searching…";
  try {
    const { moments } = await api(`/search?${params}`);
    if (p !== player) return;
    moments.sort((a, b) => a.start - b.start);
    $("#moments-state").textContent = moments.length ? `${moments.length} moment(s)` : "No moment matches.";
    $("#moments-list").innerHTML = moments.map((m) => `
      <li data-start="${m.start}" data-end="${m.end}" tabindex="0">
        <img src="${escapeHtml(withKey(m.thumbnail_url))}" alt="frame ${m.best_frame}" loading="lazy">
        <span>${m.start.toFixed(2)}–${m.end.toFixed(2)} s · ${escapeHtml(m.classes.join(", "))}
          · score ${m.score.toFixed(2)}</span>
      </li>`).join("");
  } catch (err) {
    if (p === player) $("#moments-state").textContent = `Cannot search: ${err.message}`;
  }
}

function playMoment(li) {
  const video = $("#video");
  momentEnd = Number(li.dataset.end);
  video.currentTime = Number(li.dataset.start);
  for (const other of document.querySelectorAll("#moments-list li")) other.classList.toggle("playing", other === li);
  video.play().catch(() => {});
}

$("#moments-form").addEventListener("submit", (e) => { e.preventDefault(); findMoments(); });
$("#moments-list").addEventListener("click", (e) => {
  const li = e.target.closest("li[data-start]");
  if (li) playMoment(li);
});
$("#video").addEventListener("timeupdate", () => {
  const video = $("#video");
  if (momentEnd !== null && video.currentTime >= momentEnd) {
    video.pause();
    video.currentTime = momentEnd;
    momentEnd = null;
  }
});

// -- start -------------------------------------------------------------------------------------
if (key) signIn(key).catch(() => { key = ""; localStorage.removeItem("vidinfer-key"); });
