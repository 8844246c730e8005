// The query model: rows of the builder <-> iDigBio's query object (rq), the sentence a
// person reads, and the page's address (?rq=...&form=... or #state= for long queries).

export const GEO_TYPES = ["geo_bounding_box", "geo_distance", "geo_polygon"];

/** One builder row for each key of rq (the map's geopoint, "data" fulltext and the two
 * checkboxes are kept out: they have their own controls). */
export function rowsFromQuery(rq) {
  const rows = [];
  for (const [key, value] of Object.entries(rq || {})) {
    if (key === "data" && value && value.type === "fulltext") continue;
    if (key === "hasMedia" && value === true) continue;
    if (key === "geopoint" && value && (GEO_TYPES.includes(value.type) || value.type === "exists")) continue;
    rows.push(rowFromValue(key, value));
  }
  return rows;
}

export function rowFromValue(field, value) {
  if (Array.isArray(value)) return { field, type: "list", value: value.join("\n") };
  if (value && typeof value === "object") {
    const t = value.type;
    if (t === "exists" || t === "missing") return { field, type: t };
    if (t === "prefix") return { field, type: "prefix", value: String(value.value ?? "") };
    if (t === "range") {
      return { field, type: "range", gte: str(value.gte ?? value.gt), lte: str(value.lte ?? value.lt) };
    }
    return { field, type: "json", value: JSON.stringify(value) };
  }
  return { field, type: "value", value: value === null || value === undefined ? "" : String(value) };
}

function str(v) {
  return v === undefined || v === null ? "" : String(v);
}

/** The value a row stands for, or undefined while it is incomplete. `kind` is the field's
 * kind from /v2/fields (numbers and booleans are sent as such). */
export function valueOfRow(row, kind) {
  const scalar = (text) => {
    const t = String(text).trim();
    if (t === "") return undefined;
    if (kind === "boolean") return t.toLowerCase() === "true" || t === "1" || t.toLowerCase() === "yes";
    if ((kind === "integer" || kind === "float") && /^-?\d+(\.\d+)?$/.test(t)) return Number(t);
    return t;
  };
  switch (row.type) {
    case "exists":
    case "missing":
      return { type: row.type };
    case "prefix": {
      const v = String(row.value || "").trim();
      return v ? { type: "prefix", value: v } : undefined;
    }
    case "range": {
      const out = { type: "range" };
      const gte = scalar(row.gte ?? "");
      const lte = scalar(row.lte ?? "");
      if (gte !== undefined) out.gte = gte;
      if (lte !== undefined) out.lte = lte;
      return gte === undefined && lte === undefined ? undefined : out;
    }
    case "list": {
      const items = splitList(row.value || "").map(scalar).filter((x) => x !== undefined);
      if (!items.length) return undefined;
      return items.length === 1 ? items[0] : items;
    }
    case "json":
      try {
        return JSON.parse(row.value);
      } catch {
        return undefined;
      }
    default: {
      const text = String(row.value ?? "");
      // A pasted column of names is a list, whatever the row's type said.
      if (/\n/.test(text.trim())) return valueOfRow({ ...row, type: "list" }, kind);
      return scalar(text);
    }
  }
}

/** Lines, or else commas/semicolons/tabs, as separate values. */
export function splitList(text) {
  const lines = String(text).split(/\r?\n/).map((s) => s.trim()).filter(Boolean);
  if (lines.length > 1) return lines;
  return String(text).split(/[,;\t]/).map((s) => s.trim()).filter(Boolean);
}

/** rq from the builder's parts. */
export function buildQuery({ rows, kinds, fulltext, hasMedia, hasPoint, geo }) {
  const rq = {};
  for (const row of rows) {
    if (!row.field) continue;
    const v = valueOfRow(row, kinds[row.field.toLowerCase()]);
    if (v !== undefined) rq[row.field] = v;
  }
  const words = String(fulltext || "").trim();
  if (words) rq.data = { type: "fulltext", value: words };
  if (hasMedia) rq.hasMedia = true;
  if (geo) rq.geopoint = geo;
  else if (hasPoint) rq.geopoint = { type: "exists" };
  return rq;
}

/** A sentence a person reads: "genus is acer, and has media, and in a box …". */
export function sentence(rq) {
  const parts = [];
  for (const [key, value] of Object.entries(rq || {})) {
    parts.push(describe(key, value));
  }
  return parts.length ? "Records where " + parts.join(", and ") : "Every record";
}

function describe(key, value) {
  if (Array.isArray(value)) return `${key} is one of ${value.map((v) => `“${v}”`).join(", ")}`;
  if (value && typeof value === "object") {
    switch (value.type) {
      case "exists":
        return key === "geopoint" ? "has a map point" : `${key} is present`;
      case "missing":
        return `${key} is missing`;
      case "prefix":
        return `${key} starts with “${value.value}”`;
      case "fulltext":
        return `any field mentions “${value.value}”`;
      case "range":
        return `${key} is ${[value.gte !== undefined ? `from ${value.gte}` : "", value.lte !== undefined ? `to ${value.lte}` : ""].filter(Boolean).join(" ")}`;
      case "geo_bounding_box":
        return `the point is in the box N ${value.top_left.lat}, W ${value.top_left.lon}, S ${value.bottom_right.lat}, E ${value.bottom_right.lon}`;
      case "geo_distance":
        return `the point is within ${value.distance} of ${value.lat}, ${value.lon}`;
      case "geo_polygon":
        return `the point is inside a ${(value.points || []).length}-corner polygon`;
      default:
        return `${key} matches ${JSON.stringify(value)}`;
    }
  }
  if (value === true) return key === "hasMedia" ? "has media" : `${key} is true`;
  if (value === false) return `${key} is false`;
  return `${key} is “${value}”`;
}

// --- the page's address ---------------------------------------------------------------------

const PARAMS = ["rq", "mq", "form", "core_type", "core_source", "record_fields", "mediarecord_fields", "extensions", "label"];
const MAX_URL = 1500;

/** The state held in the address: ?rq=<json>&... or, for long queries, #state=<json>. */
export function readAddress(loc) {
  const out = {};
  const take = (params) => {
    for (const key of PARAMS) {
      const raw = params.get(key);
      if (raw === null || raw === "") continue;
      if (key === "rq" || key === "mq") {
        try {
          out[key] = JSON.parse(raw);
        } catch {
          out.error = `the ${key} in the address is not valid JSON`;
        }
      } else {
        out[key] = raw;
      }
    }
  };
  take(new URLSearchParams(loc.search));
  if (loc.hash.startsWith("#state=")) {
    try {
      Object.assign(out, JSON.parse(decodeURIComponent(loc.hash.slice("#state=".length))));
    } catch {
      /* a fragment that is not ours */
    }
  }
  return out;
}

/** The address (path + query or fragment) for a state. */
export function addressFor(state) {
  const params = new URLSearchParams();
  for (const key of PARAMS) {
    const v = state[key];
    if (v === undefined || v === null || v === "") continue;
    if ((key === "rq" || key === "mq") && typeof v === "object") {
      if (key === "mq" && !Object.keys(v).length) continue;
      params.set(key, JSON.stringify(v));
    } else {
      params.set(key, String(v));
    }
  }
  const query = params.toString();
  if (query.length <= MAX_URL) return "/portal/" + (query ? "?" + query : "");
  const compact = {};
  for (const key of PARAMS) if (state[key] !== undefined && state[key] !== "") compact[key] = state[key];
  return "/portal/#state=" + encodeURIComponent(JSON.stringify(compact));
}

/** The field names nearest to a mistyped one (for a 400's `terms` list). */
export function nearest(name, names, n = 3) {
  const d = (a, b) => {
    const m = Array.from({ length: a.length + 1 }, (_, i) => [i]);
    for (let j = 1; j <= b.length; j++) m[0][j] = j;
    for (let i = 1; i <= a.length; i++)
      for (let j = 1; j <= b.length; j++)
        m[i][j] = Math.min(m[i - 1][j] + 1, m[i][j - 1] + 1, m[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    return m[a.length][b.length];
  };
  const lower = name.toLowerCase();
  return [...names].sort((a, b) => d(lower, a.toLowerCase()) - d(lower, b.toLowerCase())).slice(0, n);
}
