// rsvl app: talks to /api/* of the server that served this page; no external code.
"use strict";

const $ = (id) => document.getElementById(id);
let tasks = [];
let images = [];
let info = { max_upload_bytes: Infinity, max_upload: "", suffixes: [] };

function setStatus(message, isError = false) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "";
}

async function getJSON(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function currentTask() {
  return tasks.find((t) => t.name === $("task").value);
}

function showTextBox() {
  const task = currentTask();
  const label = task ? task.text_label : null;
  $("text-box").hidden = !label;
  if (label) $("text-label").textContent = label;
}

function showSource() {
  const upload = $("source-upload").checked;
  $("upload-box").hidden = !upload;
  $("pick-box").hidden = upload;
}

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function fillImages() {
  const filter = $("image-filter").value.toLowerCase();
  const select = $("image");
  const chosen = select.value;
  select.replaceChildren();
  for (const image of images) {
    if (filter && !image.name.toLowerCase().includes(filter)) continue;
    const option = document.createElement("option");
    option.value = image.name;
    option.textContent = `${image.name} (${formatSize(image.size)})`;
    select.appendChild(option);
  }
  if (chosen) select.value = chosen;
}

function formatCell(value) {
  if (typeof value === "number" && !Number.isInteger(value)) return value.toFixed(3);
  if (value !== null && typeof value === "object") return JSON.stringify(value);
  return value === null || value === undefined ? "" : String(value);
}

function showResult(result) {
  $("result").hidden = false;
  $("summary").textContent = result.summary;
  const overlay = $("overlay");
  overlay.hidden = !result.overlay_url;
  if (result.overlay_url) overlay.src = result.overlay_url;
  else overlay.removeAttribute("src");

  const columns = [];
  for (const row of result.rows) for (const key of Object.keys(row)) if (!columns.includes(key)) columns.push(key);
  const head = document.createElement("tr");
  for (const key of columns) {
    const th = document.createElement("th");
    th.textContent = key;
    head.appendChild(th);
  }
  $("rows").tHead.replaceChildren(columns.length ? head : "");
  const body = $("rows").tBodies[0];
  body.replaceChildren();
  for (const row of result.rows) {
    const tr = document.createElement("tr");
    for (const key of columns) {
      const td = document.createElement("td");
      td.textContent = formatCell(row[key]);
      if (typeof row[key] === "number") td.className = "num";
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }

  const list = $("files");
  list.replaceChildren();
  for (const url of result.files) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = url;
    a.textContent = decodeURIComponent(url.split("/").slice(3).join("/"));
    a.target = "_blank";
    li.appendChild(a);
    list.appendChild(li);
  }
}

async function run(event) {
  event.preventDefault();
  const task = currentTask();
  if (!task) return setStatus("no task to run", true);
  const form = new FormData();
  form.append("task", task.name); // first, so the server knows the task before the file arrives
  if (task.text_label) form.append("text", $("text").value);
  if ($("source-upload").checked) {
    const file = $("file").files[0];
    if (!file) return setStatus("choose a file to upload", true);
    if (file.size === 0) return setStatus(`${file.name}: the file is empty`, true);
    if (file.size > info.max_upload_bytes) return setStatus(`${file.name} is larger than the ${info.max_upload} limit`, true);
    form.append("file", file, file.name);
  } else {
    if (!$("image").value) return setStatus("pick an image", true);
    form.append("image", $("image").value);
  }

  $("run").disabled = true;
  const started = Date.now();
  setStatus("running…");
  const timer = setInterval(() => setStatus(`running… ${Math.round((Date.now() - started) / 1000)} s`), 1000);
  try {
    const response = await fetch("/api/run", { method: "POST", body: form });
    const body = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
    showResult(body);
    setStatus(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } catch (error) {
    setStatus(`error: ${error.message}`, true);
  } finally {
    clearInterval(timer);
    $("run").disabled = false;
  }
}

async function start() {
  try {
    [tasks, info] = await Promise.all([getJSON("/api/tasks"), getJSON("/api/info")]);
    const listing = await getJSON("/api/images");
    images = listing.images;
    $("images-hint").textContent = `${images.length} images in ${info.data_folders.join(", ") || "no data folder"}` +
      (listing.truncated ? " (list truncated)" : "");
  } catch (error) {
    return setStatus(`cannot reach the server: ${error.message}`, true);
  }
  for (const task of tasks) {
    const option = document.createElement("option");
    option.value = task.name;
    option.textContent = task.title;
    $("task").appendChild(option);
  }
  $("file").accept = info.suffixes.join(",");
  $("upload-hint").textContent = `${info.suffixes.join(" ")}; at most ${info.max_upload}`;
  fillImages();
  showTextBox();
  showSource();
  if (!tasks.length) {
    $("run").disabled = true;
    setStatus("no task is available: no model was found", true);
  }
  $("task").addEventListener("change", showTextBox);
  $("source-pick").addEventListener("change", showSource);
  $("source-upload").addEventListener("change", showSource);
  $("image-filter").addEventListener("input", fillImages);
  $("run-form").addEventListener("submit", run);
}

start();
