// The playground: a small page over the service's own API (POST /runsync with the task API).
// The option controls are generated from the task API's JSON schema (GET /v1/options), so a
// new option declared on the server appears here without touching this file.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const state = { schema: null, hidden: [], maxUpload: 20e6, keysRequired: false };
const IMAGE_NAME = /\.(png|jpe?g|webp|gif|bmp|tiff?|heic|heif|avif)$/i;

function message(text) {
  const div = document.createElement("div");
  div.className = "msg";
  div.textContent = text;
  $("#messages").prepend(div);
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("#api-key").value.trim();
  if (key) h["X-Api-Key"] = key;
  return h;
}

// ------------------------------------------------------------------ controls from the schema

function resolve(schema, node) {
  if (node && node.$ref) return resolve(schema, schema.$defs[node.$ref.split("/").pop()]);
  if (node && node.anyOf) {
    const branch = node.anyOf.find((b) => b.type !== "null") || {};
    return { ...resolve(schema, branch), nullable: node.anyOf.some((b) => b.type === "null"),
             anyTypes: node.anyOf.map((b) => b.type), default: node.default, title: node.title, description: node.description };
  }
  return node || {};
}

function control(name, prop) {
  const label = document.createElement("label");
  const text = document.createElement("span");
  text.textContent = prop.title || name;
  if (prop.description) {
    const small = document.createElement("small");
    small.textContent = prop.description;
    text.append(small);
  }
  let input;
  if (prop.enum) {
    input = document.createElement("select");
    for (const v of prop.enum) input.append(new Option(v, v, false, v === prop.default));
  } else if (prop.type === "boolean") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = prop.default === true;
  } else if ((prop.type === "integer" || prop.type === "number") && prop.minimum !== undefined && prop.maximum !== undefined
             && !(prop.anyTypes && prop.anyTypes.includes("string"))) {
    input = document.createElement("input");
    input.type = "range";
    input.min = prop.minimum; input.max = prop.maximum;
    input.step = prop.type === "integer" ? 1 : (prop.maximum - prop.minimum) / 100;
    input.value = prop.default ?? prop.minimum;
    const out = document.createElement("output");
    out.textContent = prop.default ?? "auto";
    input.addEventListener("input", () => { out.textContent = input.value; input.dataset.touched = "1"; });
    text.append(" ", out);
  } else {
    input = document.createElement("input");
    input.type = "text";
    input.placeholder = prop.default !== undefined && prop.default !== null ? String(prop.default) : "";
  }
  input.id = "opt-" + name;
  input.dataset.option = name;
  input.dataset.kind = prop.enum ? "enum" : (prop.anyTypes && prop.anyTypes.includes("string") ? "string" : prop.type);
  input.dataset.default = JSON.stringify(prop.default ?? null);
  label.append(text, input);
  return label;
}

function buildControls(doc) {
  const schema = doc.task;
  const output = resolve(schema, schema.properties.output);
  const box = $("#options");
  for (const [name, raw] of Object.entries(output.properties || {})) {
    if (doc.hidden.includes(name)) continue;
    box.append(control(name, resolve(schema, raw)));
  }
  const pipeline = resolve(schema, schema.properties.pipeline);
  const select = $("#pipeline");
  for (const p of pipeline.enum || ["simple"]) {
    const served = doc.pipelines.length === 0 || doc.pipelines.includes(p);
    select.append(new Option(served ? p : `${p} (not served here)`, p, false, p === pipeline.default));
    if (!served) select.lastChild.disabled = true;
  }
}

function collectOptions() {
  const out = { mask: true };  // the matte is always shown
  for (const input of document.querySelectorAll("#options [data-option]")) {
    const name = input.dataset.option, kind = input.dataset.kind, def = JSON.parse(input.dataset.default);
    let value;
    if (input.type === "checkbox") value = input.checked;
    else if (input.type === "range") { if (def === null && !input.dataset.touched) continue; value = Number(input.value); }
    else if (kind === "enum") value = input.value;
    else { if (input.value.trim() === "") continue; value = input.value.trim(); }
    if (value !== def) out[name] = value;
  }
  return out;
}

// ------------------------------------------------------------------ requests

async function callApi(image, pipeline, output) {
  const body = JSON.stringify({ input: { image, pipeline, output } });
  let res = await fetch("/runsync?wait=300000", { method: "POST", headers: headers(), body });
  let answer = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error(answer.error || (answer.errors && answer.errors[0].title) || `HTTP ${res.status}`);
  while (answer.status === "IN_QUEUE" || answer.status === "IN_PROGRESS") {
    await new Promise((r) => setTimeout(r, 500));
    res = await fetch(`/status/${answer.id}`, { headers: headers() });
    answer = await res.json();
    if (!res.ok) throw new Error(answer.error || `HTTP ${res.status}`);
  }
  if (answer.status !== "COMPLETED") throw new Error(answer.error || `job ${answer.status}`);
  return answer.output;
}

function imageSrc(entry) {
  if (!entry) return null;
  if (entry.type === "base64") {
    const ext = (entry.filename.split(".").pop() || "png").toLowerCase();
    return `data:image/${ext === "jpg" ? "jpeg" : ext};base64,${entry.data}`;
  }
  return entry.data;  // s3_url / put_url: the stored object's URL
}

function loadImage(src) {
  return new Promise((resolveImg, reject) => {
    const img = new Image();
    img.onload = () => resolveImg(img);
    img.onerror = () => reject(new Error("the result could not be displayed"));
    img.src = src;
  });
}

// ------------------------------------------------------------------ rendering

function newCard(name) {
  const card = $("#result-template").content.firstElementChild.cloneNode(true);
  $(".name", card).textContent = name;
  $("#results").prepend(card);
  return card;
}

function finish(card, stateName, text) {
  card.dataset.state = stateName;
  $(".state", card).textContent = text;
}

function showSafety(card, entry) {
  if (entry.verdict === undefined) return;
  $(".safety", card).hidden = false;
  $(".caption", card).textContent = entry.caption || "(none)";
  const v = entry.verdict;
  $(".verdict", card).textContent = v.allowed ? v.status_text : `${v.status_text}`;
}

function showTimings(card, timings) {
  if (!timings) return;
  const body = $(".timings tbody", card);
  let total = 0;
  for (const [stage, ms] of Object.entries(timings)) {
    total += ms;
    body.insertAdjacentHTML("beforeend", "<tr><td></td><td></td></tr>");
    body.lastChild.cells[0].textContent = stage;
    body.lastChild.cells[1].textContent = ms.toFixed(1);
  }
  body.insertAdjacentHTML("beforeend", `<tr><th>total</th><th>${total.toFixed(1)}</th></tr>`);
  $(".timings", card).hidden = false;
}

async function render(card, original, entry) {
  showSafety(card, entry);
  showTimings(card, entry.timings);
  if (entry.status === "blocked") {
    const reasons = (entry.verdict && entry.verdict.reasons || []).join("; ") || "the safety checks did not pass";
    finish(card, "blocked", `Blocked by the safety gate: ${reasons}`);
    return;
  }
  const cut = await loadImage(imageSrc(entry));
  // A pasted URL is fetched by the server; the browser may not reach it (then: no "before").
  const orig = await loadImage(original).catch(() => null);
  const before = $(".before", card), after = $(".after", card);
  before.width = after.width = cut.naturalWidth;
  before.height = after.height = cut.naturalHeight;
  after.getContext("2d").drawImage(cut, 0, 0);
  const slider = $(".slider", card);
  slider.addEventListener("input", () => { after.style.clipPath = `inset(0 0 0 ${slider.value}%)`; });
  $(".compare", card).hidden = false;
  if (orig) {
    const box = entry.crop_box || [0, 0, orig.naturalWidth, orig.naturalHeight];
    before.getContext("2d").drawImage(orig, box[0], box[1], box[2] - box[0], box[3] - box[1], 0, 0, cut.naturalWidth, cut.naturalHeight);
    $(".original", card).src = original;
  } else {
    $(".original", card).closest("figure").hidden = true;
  }
  if (orig && entry.crop_box) {
    const [x0, y0, x1, y1] = entry.crop_box, W = orig.naturalWidth, H = orig.naturalHeight;
    Object.assign($(".crop-box", card).style, { left: `${100 * x0 / W}%`, top: `${100 * y0 / H}%`,
      width: `${100 * (x1 - x0) / W}%`, height: `${100 * (y1 - y0) / H}%` });
    $(".crop-box", card).hidden = false;
  }
  if (entry.crop_box) {
    const [x0, y0, x1, y1] = entry.crop_box;
    $(".crop-text", card).textContent = ` · crop box ${x0},${y0} – ${x1},${y1}`;
  }
  if (entry.mask) $(".mask", card).src = imageSrc(entry.mask);
  $(".details", card).hidden = false;
  const link = $(".download", card);
  link.href = imageSrc(entry);
  link.download = entry.filename;
  link.textContent = `Download ${entry.filename} (${entry.width}×${entry.height})`;
  link.hidden = false;
  finish(card, "done", entry.verdict ? "Allowed by the safety gate" : "Done");
}

async function process(name, image, original) {
  const card = newCard(name);
  try {
    const output = await callApi(image, $("#pipeline").value, collectOptions());
    await render(card, original, output.images[0]);
  } catch (err) {
    finish(card, "error", `Rejected: ${err.message}`);
  }
}

function readDataUrl(file) {
  return new Promise((res, rej) => {
    const reader = new FileReader();
    reader.onload = () => res(reader.result);
    reader.onerror = () => rej(reader.error);
    reader.readAsDataURL(file);
  });
}

async function handleFiles(files) {
  for (const file of files) {
    if (!(file.type.startsWith("image/") || IMAGE_NAME.test(file.name))) {
      message(`Rejected ${file.name}: not an image (${file.type || "unknown type"})`);
      continue;
    }
    if (file.size * 4 / 3 > state.maxUpload) {
      message(`Rejected ${file.name}: ${(file.size / 1e6).toFixed(1)} MB is over this server's upload limit`);
      continue;
    }
    const url = await readDataUrl(file);
    process(file.name, url, url);
  }
}

// ------------------------------------------------------------------ wiring

async function checkHealth() {
  const badge = $("#health");
  try {
    const res = await fetch("/health");
    const body = await res.json();
    badge.dataset.phase = body.status;
    badge.textContent = body.status === "ready" ? `ready · ${body.pipelines.join(", ")}` : body.status;
    if (body.status === "loading") setTimeout(checkHealth, 1000);
  } catch (err) {
    badge.dataset.phase = "failed";
    badge.textContent = "unreachable";
  }
}

async function init() {
  const doc = await (await fetch("/v1/options")).json();
  state.maxUpload = doc.max_upload_bytes;
  state.keysRequired = doc.keys_required;
  $("#key-row").hidden = !doc.keys_required;
  $("#api-key").value = sessionStorage.getItem("ben2-key") || "";
  $("#api-key").addEventListener("change", () => sessionStorage.setItem("ben2-key", $("#api-key").value));
  buildControls(doc);
  checkHealth();
  const drop = $("#drop"), input = $("#files");
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") input.click(); });
  input.addEventListener("change", () => { handleFiles([...input.files]); input.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); handleFiles([...e.dataTransfer.files]); });
  $("#url-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const url = $("#url").value.trim();
    if (url) process(url, url, url);
  });
  document.body.dataset.ready = "1";
}

init().catch((err) => message(`The playground could not start: ${err.message}`));
