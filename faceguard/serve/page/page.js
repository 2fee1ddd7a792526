// The faceguard serve page: pick or drop photos, protect them through the job API
// (docs/serve.md), show each before/after at full resolution, run the recognizer check, download.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { options: null, chosen: [], job: null, cards: new Map(), uploading: 0, checked: false,
                downloaded: false, timer: null };
const UPLOADS_AT_ONCE = 3;

async function api(method, url, body) {
  const response = await fetch(url, { method, body });
  let data = null;
  try { data = await response.json(); } catch (e) { data = { error: `${response.status} ${response.statusText}` }; }
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

async function loadOptions() {
  const o = state.options = await api("GET", "/api/options");
  $("eps").value = o.eps.default; $("eps-help").textContent = `${o.eps.help} (default: ${o.eps.default}).`;
  for (const m of o.method.choices) {
    const option = new Option(m + (m === o.method.default ? " (default)" : ""), m, false, m === o.method.default);
    $("method").add(option);
  }
  $("method-help").textContent = `${o.method.help}. Here each photo is protected on its own; ` +
    `${o.method.not_served.join(", ")} need a whole folder: use faceguard protect.`;
  for (const s of o.strength.choices) {
    $("strength").add(new Option(s + (s === o.strength.default ? " (default)" : ""), s, false, s === o.strength.default));
  }
  $("strength-help").textContent = `${o.strength.help} (default: ${o.strength.default}; ` +
    `it shapes ${o.strength.methods.join(", ")}; the other methods ignore it).`;
  const shaped = () => { $("strength").disabled = !o.strength.methods.includes($("method").value); };
  $("method").addEventListener("change", shaped); shaped();
  $("identities").value = o.identities.default; $("identities-help").textContent = o.identities.help + ".";
  $("caveat").textContent = `Recognizer check (${o.check.model}, same person below ${o.check.threshold}): ` +
    `note: ${o.check.caveat}.`;
  const l = o.limits;
  $("limits").textContent = `Up to ${(l.max_bytes / 1048576).toFixed(0)} MiB and ${l.max_megapixels} megapixels ` +
    `per photo. The server keeps your photos only until you download the zip, or ${l.job_ttl_seconds / 60} minutes ` +
    "after you last looked.";
}

function choose(entries) {
  state.chosen = entries;
  $("picked").textContent = entries.length ? `${entries.length} file(s) chosen: ` +
    entries.slice(0, 5).map((e) => e.path).join(", ") + (entries.length > 5 ? ", …" : "") : "No photo chosen yet.";
  $("start").disabled = !entries.length;
}

function readEntry(entry, prefix) {  // a dropped file or folder (recursively) as [{file, path}]
  return new Promise((resolve) => {
    if (entry.isFile) { entry.file((file) => resolve([{ file, path: prefix + file.name }]), () => resolve([])); return; }
    const reader = entry.createReader(), found = [];
    const more = () => reader.readEntries(async (batch) => {
      if (!batch.length) { resolve(found); return; }
      for (const child of batch) found.push(...await readEntry(child, `${prefix}${entry.name}/`));
      more();
    }, () => resolve(found));
    more();
  });
}

function card(name, place = null) {  // a photo's card, after ``place`` or at the end of the list
  const node = $("card").content.firstElementChild.cloneNode(true);
  named(node, name);
  const viewer = node.querySelector(".viewer"), after = node.querySelector("img.after");
  const split = node.querySelector(".split"), flip = node.querySelector(".flip");
  const divider = node.querySelector(".divider");
  const show = (value) => {  // the after photo covers the part right of the split
    split.value = value; after.style.clipPath = `inset(0 0 0 ${value}%)`;
    divider.hidden = value <= 0 || value >= 100; divider.style.left = `${value}%`;
    node.querySelector(".showing").textContent = value >= 100 ? "before" : value <= 0 ? "after" : "before | after";
    flip.textContent = value >= 100 ? "Show after" : "Show before";
    node.dataset.showing = value >= 100 ? "before" : value <= 0 ? "after" : "split";
  };
  split.addEventListener("input", () => show(Number(split.value)));
  flip.addEventListener("click", () => show(Number(split.value) >= 100 ? 0 : 100));
  node.querySelector(".full").addEventListener("change", (e) => viewer.classList.toggle("full", e.target.checked));
  show(0);
  if (place) place.after(node); else $("photos").append(node);
  return node;
}

function named(node, name) { node.dataset.name = name; node.querySelector(".name").textContent = name; }

function fmt(value) { return typeof value === "number" ? (Number.isInteger(value) ? value : value.toFixed(4)) : value; }

function numbers(record) {
  const shaped = state.options.strength.methods.includes(record.method);
  const rows = [["faces", record.faces], ["ε (pixel levels)", record.eps], ["strength", shaped ? record.strength : null],
    ["largest change L∞", `${record.linf}${record.lossy ? " (JPEG re-encoding: the ε bound is not exact)" : ""}`],
    ["PSNR (dB)", record.psnr], ["SSIM", record.ssim], ["format", record.format], ["seconds", record.seconds]];
  for (const [key, value] of Object.entries(record.visibility || {})) rows.push([`visibility: ${key}`, value]);
  return rows.filter(([, v]) => v !== undefined && v !== null);
}

function checkText(photo) {
  const c = state.job && state.job.check;
  if (!c || !c.photos) return ["", ""];
  const found = c.photos.find((p) => p.rel === photo.name);
  if (!found) return ["", ""];
  if (found.status === "matches" || found.status === "evades") {
    const basis = found.basis === "own original" ? "its own original (no other photo of the person)"
      : `the person's other ${found.other_photos} photo(s)`;
    const d = found.basis === "own original" ? found.own_distance : found.person_distance;
    return [found.status, `${c.model}: ${found.status === "matches" ? "STILL MATCHES" : "evades"} — distance ` +
      `${d} to ${basis}; same person below ${c.threshold}.`];
  }
  return ["", `${c.model}: ${found.status.replace("_", " ")}: ${found.reason}`];
}

function update(photo) {
  const node = state.cards.get(photo.index); if (!node) return;
  const record = photo.record || {};
  node.className = `photo ${photo.status}`;
  const bar = node.querySelector(".progress"), status = node.querySelector(".status");
  const expected = (state.job && state.job.seconds_per_photo) || 6;
  if (photo.status === "queued") { status.textContent = "waiting for a free worker…"; bar.removeAttribute("value"); }
  else if (photo.status === "protecting") {
    node.started = node.started || Date.now();
    const seconds = (Date.now() - node.started) / 1000;
    status.textContent = `protecting… ${seconds.toFixed(0)} s (about ${expected.toFixed(0)} s per photo)`;
    bar.value = Math.min(95, 100 * seconds / expected);
  } else {
    bar.value = 100; bar.hidden = true;
    status.textContent = photo.status === "protected" ? `protected: ${record.faces} face(s)` :
      photo.status === "no_face" ? `no face found: ${photo.reason || "nothing to protect"}; kept unchanged` :
      `error: ${photo.reason}`;
  }
  if (photo.status !== "protected" || state.downloaded) return;
  const result = node.querySelector(".result");
  if (result.hidden) {
    const base = `/api/jobs/${state.job.id}/photos/${photo.index}`;
    node.querySelector("img.before").src = `${base}/original`;
    node.querySelector("img.after").src = `${base}/protected`;
    const link = node.querySelector("a.download");
    link.href = `${base}/protected?download=1`; link.download = photo.name.split("/").pop();
    const list = node.querySelector(".numbers");
    for (const [key, value] of numbers(record)) {
      list.append(Object.assign(document.createElement("dt"), { textContent: key }),
                  Object.assign(document.createElement("dd"), { textContent: fmt(value) }));
    }
    result.hidden = false;
  }
  const [verdict, text] = checkText(photo), check = node.querySelector(".check");
  check.className = `check ${verdict}`;
  check.textContent = text || (state.job.check_status === "running" ? "checking with the recognizer…" : "");
}

async function poll() {
  if (!state.job || state.downloaded) return;
  try { state.job = await api("GET", `/api/jobs/${state.job.id}`); }
  catch (e) { $("summary").textContent = `lost the job: ${e.message}`; clearInterval(state.timer); return; }
  const job = state.job;
  job.photos.forEach(update);
  const c = job.counts;
  $("summary").textContent = `${c.protected} protected, ${c.no_face} without a face, ${c.error} failed, ` +
    `${c.queued + c.protecting + state.uploading} to go`;
  const finished = job.done && state.uploading === 0;
  $("download-all").disabled = !(finished && (c.protected + c.no_face) > 0);
  if (finished && c.protected > 0 && !state.checked) {
    state.checked = true;
    api("POST", `/api/jobs/${job.id}/check`).catch((e) => { $("download-note").textContent = `check failed: ${e.message}`; });
  }
  if (finished && (job.check_status === "done" || job.check_status === "error" || c.protected === 0)) {
    clearInterval(state.timer); state.timer = null;
  }
}

async function upload(entry) {  // fills the entry's waiting card (a zip's further photos go right after it)
  const form = new FormData(); form.append("photo", entry.file, entry.path);
  try {
    const data = await api("POST", `/api/jobs/${state.job.id}/photos`, form);
    let place = null;
    for (const photo of data.photos) {
      const node = place ? card(photo.name, place) : entry.node;
      named(node, photo.name);
      state.cards.set(photo.index, node); update(photo); place = node;
    }
    if (!place) entry.node.remove();
  } catch (e) {  // refused upload: its own message, the others go on
    const node = entry.node; node.className = "photo error";
    node.querySelector(".status").textContent = `error: ${e.message}`; node.querySelector(".progress").hidden = true;
  }
}

async function start() {
  $("start").disabled = true; $("results").hidden = false; $("photos").replaceChildren();
  Object.assign(state, { cards: new Map(), checked: false, downloaded: false });
  const form = new FormData();
  for (const key of ["eps", "method", "strength", "identities"]) form.append(key, $(key).value);
  try { state.job = await api("POST", "/api/jobs", form); }
  catch (e) { $("summary").textContent = `error: ${e.message}`; $("start").disabled = false; return; }
  // one card per photo at once, in the order chosen; each upload fills its own as it is answered
  const queue = state.chosen.map((entry) => ({ ...entry, node: card(entry.path) }));
  for (const { node } of queue) node.querySelector(".status").textContent = "uploading…";
  state.uploading = queue.length;
  state.timer = setInterval(poll, 1000);
  const worker = async () => { while (queue.length) { await upload(queue.shift()); state.uploading--; } };
  await Promise.all(Array.from({ length: UPLOADS_AT_ONCE }, worker));
  $("start").disabled = false; poll();
}

function downloadAll() {
  const link = document.createElement("a");
  link.href = `/api/jobs/${state.job.id}/download`; link.download = "faceguard-protected.zip";
  document.body.append(link); link.click(); link.remove();
  state.downloaded = true; $("download-all").disabled = true;
  document.querySelectorAll("a.download").forEach((a) => a.removeAttribute("href"));
  $("download-note").textContent = "Downloaded: the server has removed its copies of these photos.";
}

function setUp() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (e) => {
    e.preventDefault(); drop.classList.remove("over");
    const entries = [...e.dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry());
    if (entries.every(Boolean)) choose((await Promise.all(entries.map((en) => readEntry(en, "")))).flat());
    else choose([...e.dataTransfer.files].map((file) => ({ file, path: file.name })));
  });
  for (const id of ["files", "folder"]) {
    $(id).addEventListener("change", (e) => choose([...e.target.files].map(
      (file) => ({ file, path: file.webkitRelativePath || file.name }))));
  }
  $("start").addEventListener("click", start);
  $("download-all").addEventListener("click", downloadAll);
  loadOptions().catch((e) => { $("summary").textContent = `cannot reach the server: ${e.message}`; });
}
setUp();
