// The page: builder and JSON in sync, live count with estimates, the map, options, the
// Download button, the job's progress and result, history in this browser, recordsets.

import { GeoMap, boxQuery, circleQuery, metresOf, parseShape, toWkt } from "./map.js";
import { addressFor, buildQuery, nearest, readAddress, rowFromValue, rowsFromQuery, sentence, GEO_TYPES } from "./query.js";
import { bibtex, citation, ris, snippet } from "./snippets.js";

const $ = (id) => document.getElementById(id);
const HISTORY_KEY = "dwca-downloads.history.v1";
const TITLE = document.title;

const state = {
  fields: { records: [], mediarecords: [] },
  kinds: {},
  byName: {},
  rows: [],
  geo: null,
  mq: null,
  config: { publisher_name: "DwC-A download service" },
  estimates: null,
  count: null,
  job: null, // the history entry being watched
  poll: null,
};

// --- small helpers ------------------------------------------------------------------------

function show(el, on) {
  el.hidden = !on;
}

function setError(el, text) {
  el.textContent = text || "";
  el.hidden = !text;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  let x = Number(n);
  while (x >= 1000 && i < units.length - 1) {
    x /= 1000;
    i++;
  }
  return `${x.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function duration(seconds) {
  if (!Number.isFinite(seconds)) return "–";
  if (seconds < 1) return "under a second";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  if (button) {
    const was = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = was), 1200);
  }
}

async function getJSON(url, options = {}) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, ...options });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return { response, body };
}

// --- the request the page would send ---------------------------------------------------------

function currentQuery() {
  return buildQuery({
    rows: state.rows,
    kinds: state.kinds,
    fulltext: $("fulltext").value,
    hasMedia: $("has-media").checked,
    hasPoint: $("has-point").checked,
    geo: state.geo,
  });
}

function fieldList(text) {
  const names = String(text || "").split(/[,\s]+/).map((s) => s.trim()).filter(Boolean);
  return names.length ? names : undefined;
}

function requestBody({ withEmail = true } = {}) {
  const body = { rq: currentQuery() };
  if (state.mq && Object.keys(state.mq).length) body.mq = state.mq;
  for (const id of ["form", "core_type", "core_source"]) {
    const v = $(id).value;
    const defaults = { form: "dwca-csv", core_type: "records", core_source: "indexterms" };
    if (v !== defaults[id]) body[id] = v;
  }
  const rf = fieldList($("record_fields").value);
  if (rf) body.record_fields = rf;
  const mf = fieldList($("mediarecord_fields").value);
  if (mf) body.mediarecord_fields = mf;
  if (!$("extensions").checked) body.extensions = false;
  const email = $("email").value.trim();
  if (withEmail && email) body.email = email;
  return body;
}

// --- the builder ---------------------------------------------------------------------------

const TYPE_LABELS = {
  value: "is",
  list: "is one of (one per line)",
  prefix: "starts with",
  range: "is between",
  exists: "is present",
  missing: "is missing",
  json: "matches (JSON)",
};

function fieldOptions(select, selected) {
  select.replaceChildren();
  const groups = {};
  for (const f of state.fields.records) (groups[f.group] ||= []).push(f);
  for (const [group, list] of Object.entries(groups)) {
    const og = document.createElement("optgroup");
    og.label = group;
    for (const f of list) {
      if (f.kind === "point") continue; // the map's
      const opt = new Option(f.name, f.name, false, f.name === selected);
      og.append(opt);
    }
    select.append(og);
  }
  const verbatim = (state.fields.verbatim_terms || {}).records || [];
  if (verbatim.length) {
    const og = document.createElement("optgroup");
    og.label = "Verbatim terms, as published";
    for (const term of verbatim) og.append(new Option(`data.${term}`, `data.${term}`, false, `data.${term}` === selected));
    select.append(og);
  }
  if (selected && !state.byName[selected.toLowerCase()] && !verbatim.includes(selected.replace(/^data\./, ""))) {
    select.append(new Option(selected, selected, false, true));
  }
}

function typesFor(field) {
  const f = state.byName[String(field).toLowerCase()];
  if (String(field).startsWith("data.")) return ["value", "list", "prefix", "exists", "missing"];
  return f ? f.types.filter((t) => !GEO_TYPES.includes(t)) : ["value", "list", "exists", "missing"];
}

function renderRows() {
  const list = $("rows");
  list.replaceChildren();
  state.rows.forEach((row, i) => list.append(rowElement(row, i)));
}

function rowElement(row, i) {
  const li = document.createElement("li");
  li.className = "row";
  li.dataset.field = row.field.toLowerCase();
  const id = `row-${i}`;
  const fieldSel = document.createElement("select");
  fieldSel.id = `${id}-field`;
  fieldSel.setAttribute("aria-label", `Field of condition ${i + 1}`);
  fieldOptions(fieldSel, row.field);
  fieldSel.addEventListener("change", () => {
    row.field = fieldSel.value;
    if (!typesFor(row.field).includes(row.type)) row.type = "value";
    renderRows();
    changed();
  });
  const typeSel = document.createElement("select");
  typeSel.setAttribute("aria-label", `How ${row.field} is matched`);
  const types = typesFor(row.field);
  if (row.type === "json" && !types.includes("json")) types.push("json");
  for (const t of types) typeSel.append(new Option(TYPE_LABELS[t] || t, t, false, t === row.type));
  typeSel.addEventListener("change", () => {
    row.type = typeSel.value;
    renderRows();
    changed();
  });
  const values = document.createElement("span");
  values.className = "values";
  const input = (key, label, placeholder) => {
    const el = document.createElement("input");
    el.value = row[key] ?? "";
    el.placeholder = placeholder || "";
    el.setAttribute("aria-label", label);
    el.addEventListener("input", () => {
      row[key] = el.value;
      changed();
    });
    // A pasted column of names becomes a list.
    el.addEventListener("paste", (e) => {
      const text = (e.clipboardData || window.clipboardData)?.getData("text") || "";
      if (key === "value" && /\n/.test(text.trim())) {
        e.preventDefault();
        row.type = "list";
        row.value = text.trim();
        renderRows();
        changed();
      }
    });
    return el;
  };
  if (row.type === "value" || row.type === "prefix" || row.type === "json") {
    values.append(input("value", `Value of ${row.field}`, kindHint(row.field)));
  } else if (row.type === "list") {
    const area = document.createElement("textarea");
    area.rows = Math.min(6, Math.max(2, String(row.value || "").split("\n").length));
    area.value = row.value || "";
    area.setAttribute("aria-label", `Values of ${row.field}, one per line`);
    area.addEventListener("input", () => {
      row.value = area.value;
      changed();
    });
    values.append(area);
  } else if (row.type === "range") {
    values.append(input("gte", `${row.field} from`, "from"), document.createTextNode(" and "), input("lte", `${row.field} to`, "to"));
  }
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "quiet";
  remove.textContent = "✕";
  remove.setAttribute("aria-label", `Remove the condition on ${row.field}`);
  remove.addEventListener("click", () => {
    state.rows.splice(i, 1);
    renderRows();
    changed();
  });
  const err = document.createElement("p");
  err.className = "error row-error";
  err.setAttribute("role", "alert");
  err.hidden = true;
  li.append(fieldSel, typeSel, values, remove, err);
  return li;
}

function kindHint(field) {
  const f = state.byName[String(field).toLowerCase()];
  if (!f) return "";
  return { date: "YYYY-MM-DD", integer: "a number", float: "a number", boolean: "true or false" }[f.kind] || "";
}

function loadQuery(rq) {
  rq = rq || {};
  state.rows = rowsFromQuery(rq);
  $("fulltext").value = rq.data && rq.data.type === "fulltext" ? rq.data.value : "";
  $("has-media").checked = rq.hasMedia === true;
  const gp = rq.geopoint;
  $("has-point").checked = !!(gp && gp.type === "exists");
  state.geo = gp && GEO_TYPES.includes(gp.type) ? gp : null;
  if (state.map) state.map.set(state.geo);
  syncGeoInputs();
  renderRows();
}

// --- everything that follows a change --------------------------------------------------------

let countTimer = null;
let countAbort = null;

function changed({ fromJson = false } = {}) {
  clearErrors();
  const rq = currentQuery();
  if (!fromJson) {
    if (document.activeElement !== $("rq-json")) $("rq-json").value = JSON.stringify(rq, null, 2);
    setError($("rq-json-error"), "");
  }
  $("sentence").textContent = sentence(rq) + ".";
  const addr = addressFor({ ...optionsState(), rq, mq: state.mq || undefined, label: $("label").value || undefined });
  history.replaceState(null, "", addr);
  renderSnippet();
  clearTimeout(countTimer);
  countTimer = setTimeout(runCount, 250);
}

function optionsState() {
  const out = {};
  for (const id of ["form", "core_type", "core_source"]) out[id] = $(id).value;
  if (out.form === "dwca-csv") delete out.form;
  if (out.core_type === "records") delete out.core_type;
  if (out.core_source === "indexterms") delete out.core_source;
  if ($("record_fields").value.trim()) out.record_fields = $("record_fields").value.trim();
  if ($("mediarecord_fields").value.trim()) out.mediarecord_fields = $("mediarecord_fields").value.trim();
  if (!$("extensions").checked) out.extensions = "false";
  return out;
}

async function runCount() {
  if (countAbort) countAbort.abort();
  countAbort = new AbortController();
  const body = { rq: currentQuery() };
  if (state.mq && Object.keys(state.mq).length) body.mq = state.mq;
  $("count").textContent = "counting…";
  try {
    const { response, body: doc } = await getJSON("/v2/count", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
      signal: countAbort.signal,
    });
    if (!response.ok) {
      state.count = null;
      $("count").textContent = "no count: the query is not accepted";
      $("estimate").textContent = "";
      showServerError(doc);
      updateButton();
      return;
    }
    state.count = doc;
    const n = doc.records ?? doc.itemCount ?? 0;
    $("count").textContent =
      `${n.toLocaleString("en")} records · ${(doc.mediarecords ?? 0).toLocaleString("en")} media records · ` +
      `${(doc.recordsets ?? 0).toLocaleString("en")} recordset${doc.recordsets === 1 ? "" : "s"}`;
    $("estimate").textContent = estimateText(n, doc.mediarecords ?? 0);
  } catch (e) {
    if (e.name === "AbortError") return;
    state.count = null;
    $("count").textContent = "count unavailable (the server did not answer)";
    $("estimate").textContent = "";
  }
  updateButton();
}

function estimateText(records, media) {
  const est = state.estimates;
  if (!est || !records) return "";
  const rows = records + media;
  const size = rows * est.bytes_per_record;
  const build = est.start_seconds + rows / est.records_per_second;
  const fetchSeconds = (size * 8) / 50e6;
  const basis = est.source === "measured" ? `measured over ${est.samples} recent downloads` : "from the benchmark";
  const excel = records > 1048576 ? " More rows than a spreadsheet can open." : "";
  return `About ${bytes(size)} zipped, built in about ${duration(build)}, ${duration(fetchSeconds)} to fetch at 50 Mbit/s (${basis}).${excel}`;
}

function updateButton() {
  const button = $("download");
  const n = state.count ? state.count.records ?? state.count.itemCount : null;
  if (n === 0 && $("core_type").value !== "mediarecords") {
    button.disabled = true;
    button.textContent = "Nothing matches";
  } else {
    button.disabled = false;
    button.textContent = "Download";
  }
}

function clearErrors() {
  for (const el of document.querySelectorAll(".row-error")) setError(el, "");
  for (const el of document.querySelectorAll(".row.invalid")) el.classList.remove("invalid");
  setError($("query-error"), "");
  setError($("geo-error"), "");
}

/** Put a 400's message on the row its `key` names (rq.genus -> the genus row). */
function showServerError(doc) {
  if (!doc || !doc.error) return;
  const key = String(doc.key || "");
  const parts = key.split(".");
  let text = doc.error;
  if (doc.terms && parts[1]) {
    const names = [...state.fields.records.map((f) => f.name)];
    const unknown = (doc.terms || [])[0] || parts[1];
    text += ` Did you mean: ${nearest(unknown, names).join(", ")}?`;
  }
  if (parts[0] === "rq" && parts[1] === "geopoint") {
    setError($("geo-error"), text);
    return;
  }
  const field = (parts[0] === "rq" || parts[0] === "mq") && parts[1] ? parts[1].toLowerCase() : null;
  const row = field && document.querySelector(`.row[data-field="${CSS.escape(field)}"]`);
  if (row) {
    row.classList.add("invalid");
    setError(row.querySelector(".row-error"), text);
  } else {
    setError($("query-error"), key ? `${key}: ${text}` : text);
  }
}

// --- the map and its text inputs --------------------------------------------------------------

function syncGeoInputs() {
  const g = state.geo;
  const set = (id, v) => ($(id).value = v === undefined || v === null ? "" : String(v));
  if (g && g.type === "geo_bounding_box") {
    set("box-n", g.top_left.lat);
    set("box-w", g.top_left.lon);
    set("box-s", g.bottom_right.lat);
    set("box-e", g.bottom_right.lon);
  } else for (const id of ["box-n", "box-s", "box-w", "box-e"]) set(id, "");
  if (g && g.type === "geo_distance") {
    set("circle-lat", g.lat);
    set("circle-lon", g.lon);
    set("circle-km", Math.round(metresOf(g.distance)) / 1000);
  } else for (const id of ["circle-lat", "circle-lon", "circle-km"]) set(id, "");
  if (g && g.type === "geo_polygon") $("geo-text").value = toWkt(g);
}

function setGeo(geo) {
  state.geo = geo;
  if (state.map) state.map.set(geo);
  syncGeoInputs();
  for (const b of document.querySelectorAll("[data-tool]")) b.setAttribute("aria-pressed", "false");
  changed();
}

function num(id) {
  const t = $(id).value.trim();
  return t === "" ? NaN : Number(t);
}

function wireMap() {
  try {
    state.map = new GeoMap($("map"), {
      tileUrl: state.config.map_tile_url,
      attribution: state.config.map_tile_attribution,
      onChange: (geo) => setGeo(geo),
      onHint: (text) => ($("map-hint").textContent = text),
    });
    state.map.set(state.geo);
  } catch (e) {
    $("map-hint").textContent = "The map could not start; use the fields below.";
  }
  $("map").tabIndex = 0;
  for (const b of document.querySelectorAll("[data-tool]")) {
    b.addEventListener("click", () => {
      const tool = state.map ? state.map.setTool(b.dataset.tool) : null;
      for (const other of document.querySelectorAll("[data-tool]")) other.setAttribute("aria-pressed", String(other.dataset.tool === tool));
      if (tool) $("map").focus();
    });
  }
  $("geo-clear").addEventListener("click", () => setGeo(null));
  $("geo-fit").addEventListener("click", () => state.map && state.map.fit());
  $("box-apply").addEventListener("click", () => {
    const [n, s, w, e] = ["box-n", "box-s", "box-w", "box-e"].map(num);
    if ([n, s, w, e].some((x) => !Number.isFinite(x))) return setError($("geo-error"), "Give north, south, west and east in degrees.");
    if (Math.abs(n) > 90 || Math.abs(s) > 90) return setError($("geo-error"), "Latitudes go from −90 to 90.");
    if (Math.abs(w) > 180 || Math.abs(e) > 180) return setError($("geo-error"), "Longitudes go from −180 to 180.");
    if (n === s || w === e) return setError($("geo-error"), "The box has no area.");
    setGeo(boxQuery(n, w, s, e));
  });
  $("circle-apply").addEventListener("click", () => {
    const [lat, lon, km] = ["circle-lat", "circle-lon", "circle-km"].map(num);
    if (![lat, lon, km].every(Number.isFinite) || km <= 0) return setError($("geo-error"), "Give a latitude, a longitude and a radius in km.");
    setGeo(circleQuery(lat, lon, km));
  });
  $("geo-text-apply").addEventListener("click", () => {
    try {
      setGeo(parseShape($("geo-text").value));
    } catch (e) {
      setError($("geo-error"), e.message);
    }
  });
  $("geo-copy-wkt").addEventListener("click", (e) => copyText(toWkt(state.geo), e.target));
}

// --- snippets --------------------------------------------------------------------------

function renderSnippet() {
  const body = requestBody();
  const link = location.origin + addressFor({ ...optionsState(), rq: body.rq, mq: state.mq || undefined });
  $("snippet").textContent = snippet($("snippet-kind").value, body, location.origin, link);
}

// --- submitting and watching a job --------------------------------------------------------------

async function submit({ body, label, force = false } = {}) {
  body = body || requestBody();
  if (force) body = { ...body, force: true };
  if ("Notification" in window && Notification.permission === "default") {
    try {
      Notification.requestPermission();
    } catch {
      /* not offered here */
    }
  }
  $("download").disabled = true;
  $("submit-note").textContent = "Asking…";
  let result;
  try {
    result = await getJSON("/v2/download", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
  } catch {
    $("submit-note").textContent = "The server did not answer; try again.";
    $("download").disabled = false;
    return;
  }
  $("download").disabled = false;
  const { response, body: doc } = result;
  if (!response.ok) {
    const retry = response.headers.get("Retry-After");
    $("submit-note").textContent = `Not started: ${doc && doc.error ? doc.error : response.status}` + (retry ? ` (try again in ${retry} s)` : "");
    showServerError(doc);
    return;
  }
  $("submit-note").textContent = "";
  const entry = {
    id: doc.id,
    label: label ?? $("label").value.trim(),
    sentence: sentence(body.rq),
    request: { ...body, force: undefined, email: undefined },
    email: body.email || "",
    created: doc.created || new Date().toISOString(),
    cancel_token: doc.cancel_token || null,
    joined: !doc.cancel_token,
  };
  Object.assign(entry, statusFields(doc));
  saveEntry(entry);
  watch(entry, doc);
}

function statusFields(doc) {
  return {
    state: doc.state,
    size: doc.size ?? null,
    sha256: doc.checksum ? doc.checksum.value : null,
    expires: doc.expires || null,
    download_url: doc.download_url || null,
    filename: doc.filename || null,
    counts: doc.counts || {},
    recordsets: doc.recordsets ?? null,
    error: doc.error || null,
    completed: doc.completed || null,
  };
}

function watch(entry, doc) {
  stopPolling();
  state.job = entry;
  show($("job"), true);
  $("job-label").textContent = entry.label || entry.sentence;
  show($("job-joined"), !!entry.joined);
  show($("job-email"), !!entry.email);
  $("job-email").textContent = entry.email ? `We will email ${entry.email} when it is ready.` : "";
  if (doc) renderJob(doc);
  if (!doc || !doc.complete) schedulePoll(1000);
  $("job").scrollIntoView({ block: "nearest" });
}

function stopPolling() {
  if (state.poll) clearTimeout(state.poll.timer);
  state.poll = null;
}

function schedulePoll(delay) {
  const poll = state.poll || { delay: 1000, failures: 0, started: Date.now(), samples: [] };
  state.poll = poll;
  poll.delay = delay;
  clearTimeout(poll.timer);
  poll.timer = setTimeout(pollOnce, delay);
}

async function pollOnce() {
  const poll = state.poll;
  const entry = state.job;
  if (!poll || !entry) return;
  if (document.hidden) return; // resumed by visibilitychange
  try {
    const { response, body: doc } = await getJSON(`/v2/download/${encodeURIComponent(entry.id)}`);
    if (response.status === 404) {
      renderJob({ id: entry.id, state: "EXPIRED", error: "The server no longer knows this download.", complete: true });
      return;
    }
    poll.failures = 0;
    Object.assign(entry, statusFields(doc));
    saveEntry(entry);
    renderJob(doc);
    if (!doc.complete) schedulePoll(Math.min(10000, poll.delay * 1.5));
  } catch {
    poll.failures += 1;
    $("job-progress-text").textContent = `The server is not answering; retrying (${poll.failures})…`;
    if (poll.failures <= 5) schedulePoll(Math.min(10000, poll.delay * 2));
    else $("job-progress-text").textContent = "The server is not answering. Reload the page to try again.";
  }
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && state.poll && state.job) schedulePoll(200);
});

const STATE_WORDS = {
  PENDING: "queued",
  STARTED: "building",
  SUCCESS: "ready",
  FAILURE: "failed",
  CANCELLED: "cancelled",
  EXPIRED: "expired",
};

function renderJob(doc) {
  const entry = state.job;
  const st = doc.state || "PENDING";
  const chip = $("job-state");
  chip.textContent = STATE_WORDS[st] || st;
  chip.className = `chip chip-${st.toLowerCase()}`;
  const running = st === "PENDING" || st === "STARTED";
  show($("job-progress-box"), running);
  show($("job-cancel"), running && !!(entry && entry.cancel_token));
  show($("job-retry"), st === "FAILURE" || st === "CANCELLED");
  show($("job-rerun"), st === "EXPIRED");
  setError($("job-error"), st === "FAILURE" || st === "CANCELLED" || st === "EXPIRED" ? doc.error || "The download did not finish." : "");
  if (running) {
    const pct = Math.max(0, Math.min(100, Number(doc.percent_complete || 0)));
    $("job-progress").value = pct;
    $("job-progress").textContent = `${pct.toFixed(0)}%`;
    const written = doc.records_written || 0;
    const total = doc.total_records;
    let eta = "";
    const poll = state.poll;
    if (poll && written > 0 && pct > 0 && st === "STARTED") {
      poll.samples.push([Date.now(), pct]);
      const [t0, p0] = poll.samples[0];
      const rate = (pct - p0) / ((Date.now() - t0) / 1000);
      if (rate > 0) eta = ` · about ${duration((100 - pct) / rate)} left`;
    }
    $("job-progress-text").textContent =
      st === "PENDING" && doc.retrying
        ? `${doc.error || "A service the build needs is unreachable."} Next attempt at ${new Date(doc.retry_at).toLocaleTimeString()}.`
        : st === "PENDING"
        ? "Waiting for a worker…"
        : `${written.toLocaleString("en")} of ${total === null || total === undefined ? "?" : total.toLocaleString("en")} records written · ${pct.toFixed(0)}%${eta}`;
    document.title = `(${pct.toFixed(0)}%) ${TITLE}`;
  }
  show($("job-done"), st === "SUCCESS");
  if (st === "SUCCESS") renderDone(doc);
  if (!running && st !== "SUCCESS") document.title = `${STATE_WORDS[st] || st} · ${TITLE}`;
  renderHistory();
}

function renderDone(doc) {
  const link = $("job-link");
  link.href = doc.download_url;
  link.textContent = `Download ${doc.filename || "the archive"}`;
  link.setAttribute("download", doc.filename || "");
  $("job-size").textContent = `(${bytes(doc.size)}, ${doc.format || "dwca-csv"})`;
  const sha = doc.checksum ? doc.checksum.value : "";
  $("job-sha").textContent = sha || "–";
  const name = doc.filename || "archive.zip";
  $("job-curl").textContent = `curl -L -C - -o ${name} '${doc.download_url}'`;
  $("job-check").textContent = sha ? `echo '${sha}  ${name}' | sha256sum -c` : "";
  const c = doc.counts || {};
  const words = { records: "records", mediarecords: "media records", localities: "localities", names: "names" };
  const order = ["records", "mediarecords", ...Object.keys(c).filter((k) => k !== "records" && k !== "mediarecords")];
  const parts = order.filter((k) => k in c).map((k) => `${Number(c[k]).toLocaleString("en")} ${words[k] || k}`);
  if (doc.recordsets !== null && doc.recordsets !== undefined) {
    parts.push(`from ${doc.recordsets} recordset${doc.recordsets === 1 ? "" : "s"}`);
  }
  $("job-counts").textContent = parts.join(", ") || "–";
  if (doc.expires) {
    const days = Math.max(0, Math.round((Date.parse(doc.expires) - Date.now()) / 86400000));
    $("job-expires").textContent = `${new Date(doc.expires).toUTCString()} (in ${days} days)`;
  }
  // The service's own citation (the same words scripts get); made here for older servers.
  const info = { publisher: state.config.publisher_name, sentence: (state.job && state.job.sentence) || "" };
  $("job-citation").textContent = doc.citation || citation(doc, info);
  $("job-bibtex").textContent = doc.citation_bibtex || bibtex(doc, info);
  $("job-ris").textContent = doc.citation_ris || ris(doc, info);
  document.title = `✓ ready · ${TITLE}`;
  if (state.job && !state.job.notified) {
    state.job.notified = true;
    saveEntry(state.job);
    if ("Notification" in window && Notification.permission === "granted") {
      try {
        new Notification("Your Darwin Core Archive is ready", { body: `${doc.filename || doc.id} · ${bytes(doc.size)}` });
      } catch {
        /* notifications may be unavailable */
      }
    }
  }
}

async function cancelJob() {
  const entry = state.job;
  if (!entry || !entry.cancel_token) return;
  const { response, body } = await getJSON(`/v2/download/${encodeURIComponent(entry.id)}`, {
    method: "DELETE",
    headers: { Authorization: `Bearer ${entry.cancel_token}`, Accept: "application/json" },
  });
  if (response.status === 409) $("job-progress-text").textContent = "It had already finished.";
  else if (!response.ok) $("job-progress-text").textContent = `Cancel refused: ${(body && body.error) || response.status}`;
  else $("job-progress-text").textContent = response.status === 202 ? "Stopping…" : "Cancelled.";
  schedulePoll(300);
}

// --- history in this browser -----------------------------------------------------------------

function loadHistory() {
  try {
    const list = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

function storeHistory(list) {
  try {
    localStorage.setItem(HISTORY_KEY, JSON.stringify(list.slice(0, 500)));
  } catch {
    /* storage full or off: the page still works */
  }
}

function saveEntry(entry) {
  const list = loadHistory().filter((e) => e.id !== entry.id);
  list.unshift(entry);
  storeHistory(list);
  renderHistory();
}

function renderHistory() {
  const list = loadHistory();
  $("history-count").textContent = String(list.length);
  const text = $("history-filter").value.trim().toLowerCase();
  const st = $("history-state").value;
  const rows = list.filter((e) => (!st || e.state === st) && (!text || `${e.label} ${e.sentence}`.toLowerCase().includes(text)));
  show($("history-empty"), !list.length);
  show($("history-table"), !!list.length);
  const body = $("history-rows");
  body.replaceChildren();
  for (const e of rows) {
    const tr = document.createElement("tr");
    const td = (content) => {
      const cell = document.createElement("td");
      if (content instanceof Node) cell.append(content);
      else cell.textContent = content;
      tr.append(cell);
      return cell;
    };
    td(e.label || "–");
    td(e.sentence || "");
    const chip = document.createElement("span");
    chip.className = `chip chip-${String(e.state || "").toLowerCase()}`;
    chip.textContent = STATE_WORDS[e.state] || e.state || "?";
    td(chip);
    td(e.size ? bytes(e.size) : "–");
    td(e.created ? new Date(e.created).toLocaleString() : "");
    const actions = document.createElement("span");
    actions.className = "actions";
    const act = (label, fn, aria) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.setAttribute("aria-label", `${aria || label}: ${e.label || e.sentence}`);
      b.addEventListener("click", fn);
      actions.append(b);
    };
    if (e.state === "SUCCESS" && e.download_url) {
      const a = document.createElement("a");
      a.href = e.download_url;
      a.textContent = "Download";
      a.setAttribute("download", e.filename || "");
      actions.append(a);
    }
    act("Open", () => watch(e, null), "Open");
    act("Re-run", () => rerun(e), "Load into the form");
    act("Rename", () => {
      const label = prompt("Label for this download", e.label || "");
      if (label !== null) saveEntry({ ...e, label: label.trim() });
    });
    act("Remove", () => {
      storeHistory(loadHistory().filter((x) => x.id !== e.id));
      renderHistory();
    });
    td(actions);
    body.append(tr);
  }
}

function rerun(entry) {
  const r = entry.request || {};
  loadQuery(r.rq || {});
  state.mq = r.mq || null;
  $("mq-json").value = state.mq ? JSON.stringify(state.mq, null, 2) : "";
  $("form").value = r.form || "dwca-csv";
  $("core_type").value = r.core_type || "records";
  $("core_source").value = r.core_source || "indexterms";
  $("record_fields").value = (r.record_fields || []).join(", ");
  $("mediarecord_fields").value = (r.mediarecord_fields || []).join(", ");
  $("extensions").checked = r.extensions !== false;
  $("label").value = entry.label || "";
  changed();
  $("query").scrollIntoView({ block: "start" });
}

function exportHistory() {
  const blob = new Blob([JSON.stringify(loadHistory(), null, 2)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `dwca-downloads-${new Date().toISOString().slice(0, 10)}.json`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

async function importHistory(file) {
  try {
    const items = JSON.parse(await file.text());
    if (!Array.isArray(items)) throw new Error("not a list");
    const known = new Map(loadHistory().map((e) => [e.id, e]));
    for (const item of items) if (item && typeof item.id === "string") known.set(item.id, { ...known.get(item.id), ...item });
    storeHistory([...known.values()].sort((a, b) => String(b.created).localeCompare(String(a.created))));
    renderHistory();
  } catch (e) {
    alert(`That file is not a download history exported from this page (${e.message}).`);
  }
}

async function openById(text) {
  const m = /([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/i.exec(text || "");
  if (!m) return alert("Give a download id or its status URL.");
  const { response, body } = await getJSON(`/v2/download/${m[1].toLowerCase()}`);
  if (!response.ok) return alert((body && body.error) || "No such download.");
  const entry = loadHistory().find((e) => e.id === body.id) || {
    id: body.id,
    label: "",
    sentence: sentence((body.query && body.query.rq) || {}),
    request: body.query || {},
    created: body.created,
  };
  Object.assign(entry, statusFields(body));
  saveEntry(entry);
  watch(entry, body);
}

// --- recordsets -----------------------------------------------------------------------------

async function loadRecordsets() {
  const body = $("recordset-rows");
  try {
    const { body: doc } = await getJSON("/recordsets/");
    body.replaceChildren();
    for (const rs of (doc && doc.recordsets) || []) {
      const tr = document.createElement("tr");
      const name = document.createElement("td");
      name.textContent = rs.name || rs.recordset;
      name.title = rs.recordset;
      const cells = [rs.version, (rs.records || 0).toLocaleString("en"), (rs.mediarecords || 0).toLocaleString("en")].map((v) => {
        const c = document.createElement("td");
        c.textContent = String(v);
        return c;
      });
      const actions = document.createElement("td");
      const a = document.createElement("a");
      a.href = rs.export_url;
      a.textContent = "Export (all records)";
      const q = document.createElement("button");
      q.type = "button";
      q.textContent = "Query it";
      q.setAttribute("aria-label", `Query the records of ${rs.name || rs.recordset}`);
      q.addEventListener("click", () => {
        state.rows = state.rows.filter((r) => r.field !== "recordset");
        state.rows.push(rowFromValue("recordset", rs.recordset));
        renderRows();
        changed();
        $("query").scrollIntoView({ block: "start" });
      });
      actions.append(a, document.createTextNode(" "), q);
      tr.append(name, ...cells, actions);
      body.append(tr);
    }
  } catch {
    body.replaceChildren();
  }
}

// --- start ---------------------------------------------------------------------------------

function wireTabs() {
  const tabs = [$("tab-builder"), $("tab-json")];
  const select = (tab) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (tab === tabs[1]) $("rq-json").value = JSON.stringify(currentQuery(), null, 2);
  };
  for (const t of tabs) {
    t.addEventListener("click", () => select(t));
    t.addEventListener("keydown", (e) => {
      if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
        const next = tabs[(tabs.indexOf(t) + 1) % 2];
        select(next);
        next.focus();
      }
    });
  }
}

function wireJson() {
  const onRq = () => {
    const text = $("rq-json").value.trim();
    let rq;
    try {
      rq = text ? JSON.parse(text) : {};
      if (typeof rq !== "object" || Array.isArray(rq) || rq === null) throw new Error("the query must be a JSON object");
    } catch (e) {
      setError($("rq-json-error"), `Invalid JSON: ${e.message}`);
      return;
    }
    setError($("rq-json-error"), "");
    loadQuery(rq);
    changed({ fromJson: true });
  };
  $("rq-json").addEventListener("input", onRq);
  $("mq-json").addEventListener("input", () => {
    const text = $("mq-json").value.trim();
    try {
      state.mq = text ? JSON.parse(text) : null;
      setError($("mq-json-error"), "");
      changed();
    } catch (e) {
      setError($("mq-json-error"), `Invalid JSON: ${e.message}`);
    }
  });
  $("reformat").addEventListener("click", () => {
    $("rq-json").value = JSON.stringify(currentQuery(), null, 2);
    if (state.mq) $("mq-json").value = JSON.stringify(state.mq, null, 2);
  });
}

function wireControls() {
  $("add-row").addEventListener("click", () => {
    const field = $("add-field").value;
    if (!field) return $("add-field").focus();
    state.rows.push({ field, type: "value", value: "" });
    renderRows();
    changed();
    const last = $("rows").lastElementChild;
    const input = last && last.querySelector(".values input, .values textarea");
    if (input) input.focus();
  });
  $("clear-query").addEventListener("click", () => {
    loadQuery({});
    changed();
  });
  for (const id of ["fulltext", "has-media", "has-point", "form", "core_type", "core_source", "record_fields", "mediarecord_fields", "extensions", "label", "email"]) {
    $(id).addEventListener(id === "fulltext" || id.endsWith("fields") || id === "label" || id === "email" ? "input" : "change", () => changed());
  }
  $("email").addEventListener("input", () => {
    const email = $("email").value.trim();
    $("email-note").textContent = email ? `We will email ${email} when the archive is ready.` : "Without an email, keep this page open or come back to “My downloads”.";
  });
  $("download").addEventListener("click", () => submit());
  $("job-cancel").addEventListener("click", cancelJob);
  $("job-retry").addEventListener("click", () => state.job && submit({ body: { ...state.job.request, email: state.job.email || undefined }, label: state.job.label, force: true }));
  $("job-rerun").addEventListener("click", () => state.job && submit({ body: { ...state.job.request, email: state.job.email || undefined }, label: state.job.label, force: true }));
  $("snippet-kind").addEventListener("change", renderSnippet);
  $("snippet-copy").addEventListener("click", (e) => copyText($("snippet").textContent, e.target));
  for (const b of document.querySelectorAll("button.copy")) b.addEventListener("click", () => copyText($(b.dataset.copy).textContent, b));
  $("copy-bibtex").addEventListener("click", (e) => copyText($("job-bibtex").textContent, e.target));
  $("copy-ris").addEventListener("click", (e) => copyText($("job-ris").textContent, e.target));
  $("history-filter").addEventListener("input", renderHistory);
  $("history-state").addEventListener("change", renderHistory);
  $("history-export").addEventListener("click", exportHistory);
  $("history-import").addEventListener("change", (e) => e.target.files[0] && importHistory(e.target.files[0]));
  $("open-go").addEventListener("click", () => openById($("open-id").value));
}

async function start() {
  const [config, fields, estimates] = await Promise.all([
    getJSON("/portal/config.json").then((r) => r.body).catch(() => null),
    getJSON("/v2/fields").then((r) => r.body).catch(() => null),
    getJSON("/v2/estimates").then((r) => r.body).catch(() => null),
  ]);
  if (config) state.config = config;
  if (config && config.map_tile_attribution) $("map-attribution").textContent = `Map: ${config.map_tile_attribution}`;
  state.estimates = estimates;
  if (fields) {
    state.fields = fields;
    for (const f of fields.records) {
      state.kinds[f.name.toLowerCase()] = f.kind;
      state.byName[f.name.toLowerCase()] = f;
    }
    fieldOptions($("add-field"));
    $("add-field").insertBefore(new Option("Choose a field…", "", true, true), $("add-field").firstChild);
    const names = $("field-names");
    for (const f of fields.records) names.append(new Option(f.name));
  }
  wireTabs();
  wireJson();
  wireControls();
  const addr = readAddress(location);
  if (addr.error) setError($("query-error"), addr.error);
  loadQuery(addr.rq || {});
  state.mq = addr.mq || null;
  $("mq-json").value = state.mq ? JSON.stringify(state.mq, null, 2) : "";
  for (const id of ["form", "core_type", "core_source", "record_fields", "mediarecord_fields"]) if (addr[id]) $(id).value = addr[id];
  if (addr.extensions === "false") $("extensions").checked = false;
  if (addr.label) $("label").value = addr.label;
  wireMap();
  changed();
  renderHistory();
  loadRecordsets();
  // A download still building when the page was closed is watched again.
  const running = loadHistory().find((e) => e.state === "PENDING" || e.state === "STARTED");
  if (running) watch(running, null);
  document.body.dataset.ready = "true";
}

start();
