// The map: Leaflet (vendored) over the bundled world outline (or the operator's tiles),
// drawing a box, a circle or a polygon that becomes the query's geopoint, kept in sync with
// the text fields; WKT and GeoJSON in and out.

/* global L */

const KM = 1000;

export class GeoMap {
  constructor(element, { tileUrl, attribution, onChange, onHint }) {
    this.onChange = onChange;
    this.onHint = onHint || (() => {});
    this.map = L.map(element, { worldCopyJump: false, minZoom: 1, maxBounds: [[-90, -540], [90, 540]] }).setView([20, 0], 1);
    if (tileUrl) {
      L.tileLayer(tileUrl, { attribution: attribution || "" }).addTo(this.map);
    } else {
      fetch("/portal/static/vendor/world/land-110m.geojson")
        .then((r) => r.json())
        .then((land) => {
          L.geoJSON(land, { style: { stroke: false, fillColor: "#c9d8c5", fillOpacity: 1 }, interactive: false }).addTo(this.map);
        })
        .catch(() => this.onHint("The world outline could not be loaded; drawing still works."));
    }
    this.layer = L.layerGroup().addTo(this.map);
    this.tool = null;
    this.geo = null;
    this._wire();
  }

  // --- tools ---------------------------------------------------------------------------

  setTool(tool) {
    this.tool = this.tool === tool ? null : tool;
    this.vertices = [];
    if (this.tool) {
      this.map.dragging.disable();
      this.map.doubleClickZoom.disable();
      this.map.getContainer().classList.add("drawing");
      const hints = {
        box: "Drag a box on the map.",
        circle: "Press at the centre and drag out the radius.",
        polygon: "Click each corner; double-click or press Enter to finish, Escape to cancel.",
      };
      this.onHint(hints[this.tool]);
    } else {
      this._stopDrawing();
    }
    return this.tool;
  }

  _stopDrawing() {
    this.tool = null;
    this.vertices = [];
    this.map.dragging.enable();
    this.map.doubleClickZoom.enable();
    this.map.getContainer().classList.remove("drawing");
  }

  _wire() {
    let start = null;
    let shape = null;
    this.map.on("mousedown", (e) => {
      if (this.tool !== "box" && this.tool !== "circle") return;
      start = e.latlng;
      shape = null;
    });
    this.map.on("mousemove", (e) => {
      if (!start) {
        if (this.tool === "polygon" && this.vertices.length) this._drawPolygon([...this.vertices, e.latlng], true);
        return;
      }
      if (this.tool === "box") {
        this.layer.clearLayers();
        shape = L.rectangle(L.latLngBounds(start, e.latlng), { weight: 2 }).addTo(this.layer);
      } else if (this.tool === "circle") {
        this.layer.clearLayers();
        shape = L.circle(start, { radius: start.distanceTo(e.latlng), weight: 2 }).addTo(this.layer);
      }
    });
    this.map.on("mouseup", (e) => {
      if (!start) return;
      const from = start;
      start = null;
      if (this.tool === "box") {
        const b = L.latLngBounds(from, e.latlng);
        if (b.getNorth() !== b.getSouth() && b.getEast() !== b.getWest()) {
          this.set(boxQuery(b.getNorth(), b.getWest(), b.getSouth(), b.getEast()), true);
        }
      } else if (this.tool === "circle") {
        const metres = from.distanceTo(e.latlng);
        if (metres > 0) this.set(circleQuery(from.lat, from.lng, metres / KM), true);
      }
      shape = null;
      this._stopDrawing();
    });
    this.map.on("click", (e) => {
      if (this.tool !== "polygon") return;
      this.vertices.push(e.latlng);
      this._drawPolygon(this.vertices, true);
    });
    this.map.on("dblclick", () => {
      if (this.tool === "polygon") this._finishPolygon();
    });
    this.map.getContainer().addEventListener("keydown", (e) => {
      if (this.tool === "polygon" && e.key === "Enter") this._finishPolygon();
      if (this.tool && e.key === "Escape") {
        this._stopDrawing();
        this.draw(this.geo);
        this.onHint("Drawing cancelled.");
      }
    });
    void shape;
  }

  _drawPolygon(latlngs, open) {
    this.layer.clearLayers();
    if (latlngs.length >= 2) L.polyline(latlngs, { weight: 2, dashArray: open ? "4 4" : null }).addTo(this.layer);
  }

  _finishPolygon() {
    // A double-click adds its own two clicks: drop repeated corners.
    const pts = [];
    for (const v of this.vertices) {
      const last = pts[pts.length - 1];
      if (!last || last.lat !== v.lat || last.lng !== v.lng) pts.push(v);
    }
    this._stopDrawing();
    if (pts.length < 3) {
      this.onHint("A polygon needs at least three corners.");
      this.draw(this.geo);
      return;
    }
    this.set({ type: "geo_polygon", points: pts.map((p) => [round(wrapLon(p.lng)), round(p.lat)]) }, true);
  }

  // --- the shape -----------------------------------------------------------------------

  /** Show `geo` (a geopoint query, or null) and, when `notify`, tell the page. */
  set(geo, notify = false) {
    this.geo = geo;
    this.draw(geo);
    if (notify) this.onChange(geo);
  }

  draw(geo) {
    this.layer.clearLayers();
    if (!geo) return;
    if (geo.type === "geo_bounding_box") {
      const n = geo.top_left.lat;
      const s = geo.bottom_right.lat;
      const w = geo.top_left.lon;
      let e = geo.bottom_right.lon;
      if (w > e) e += 360; // crosses 180°: drawn eastwards across it
      L.rectangle([[s, w], [n, e]], { weight: 2 }).addTo(this.layer);
    } else if (geo.type === "geo_distance") {
      L.circle([geo.lat, geo.lon], { radius: metresOf(geo.distance), weight: 2 }).addTo(this.layer);
    } else if (geo.type === "geo_polygon") {
      L.polygon(geo.points.map(([lon, lat]) => [lat, lon]), { weight: 2 }).addTo(this.layer);
    }
  }

  fit() {
    const layers = this.layer.getLayers();
    if (layers.length) this.map.fitBounds(layers[0].getBounds(), { maxZoom: 8, padding: [10, 10] });
  }

  invalidate() {
    this.map.invalidateSize();
  }
}

// --- geometry helpers ------------------------------------------------------------------

function round(x) {
  return Math.round(x * 1e5) / 1e5;
}

export function wrapLon(lon) {
  let x = ((((lon + 180) % 360) + 360) % 360) - 180;
  if (x === -180 && lon > 0) x = 180;
  return x;
}

export function boxQuery(n, w, s, e) {
  const west = wrapLon(w);
  let east = wrapLon(e);
  if (e - w >= 360) east = west === -180 ? 180 : west; // the whole world wide
  return {
    type: "geo_bounding_box",
    top_left: { lat: round(Math.max(n, s)), lon: round(west) },
    bottom_right: { lat: round(Math.min(n, s)), lon: round(east) },
  };
}

export function circleQuery(lat, lon, km) {
  return { type: "geo_distance", lat: round(lat), lon: round(wrapLon(lon)), distance: `${Math.round(km * 1000) / 1000}km` };
}

/** Metres in a distance the server accepts ("25km", "3mi", 500). */
export function metresOf(distance) {
  if (typeof distance === "number") return distance;
  const m = /^\s*([\d.]+)\s*(m|km|mi|yd|ft|nmi)?\s*$/i.exec(String(distance));
  if (!m) return 0;
  const units = { m: 1, km: 1000, mi: 1609.344, yd: 0.9144, ft: 0.3048, nmi: 1852 };
  return Number(m[1]) * units[(m[2] || "m").toLowerCase()];
}

/** A geopoint query from WKT (POLYGON, ENVELOPE) or GeoJSON (Polygon, Feature, bbox). */
export function parseShape(text) {
  const t = String(text || "").trim();
  if (!t) throw new Error("paste a WKT polygon or a GeoJSON polygon");
  if (t.startsWith("{")) {
    let g;
    try {
      g = JSON.parse(t);
    } catch {
      throw new Error("this is not valid JSON");
    }
    if (g.type === "FeatureCollection") g = (g.features || [])[0] || {};
    if (g.type === "Feature") g = g.geometry || {};
    if (Array.isArray(g.bbox) && g.bbox.length === 4 && g.type !== "Polygon") {
      const [w, s, e, n] = g.bbox;
      return boxQuery(n, w, s, e);
    }
    if (g.type === "Polygon") return polygonFrom(g.coordinates[0]);
    if (g.type === "MultiPolygon" && g.coordinates.length === 1) return polygonFrom(g.coordinates[0][0]);
    throw new Error(`a GeoJSON ${g.type || "object"} is not a polygon; give a Polygon or a bbox`);
  }
  const env = /^ENVELOPE\s*\(\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*\)$/i.exec(t);
  if (env) {
    const [w, e, n, s] = env.slice(1).map(Number);
    return boxQuery(n, w, s, e);
  }
  const poly = /^POLYGON\s*\(\s*\(([^()]*)\)/i.exec(t);
  if (poly) {
    const pts = poly[1].split(",").map((pair) => pair.trim().split(/\s+/).map(Number));
    return polygonFrom(pts);
  }
  throw new Error("write POLYGON((lon lat, lon lat, …)) or ENVELOPE(west, east, north, south), or paste GeoJSON");
}

function polygonFrom(ring) {
  const pts = ring.map((p) => [Number(p[0]), Number(p[1])]);
  if (pts.some(([lon, lat]) => !Number.isFinite(lon) || !Number.isFinite(lat) || Math.abs(lat) > 90 || Math.abs(lon) > 180)) {
    throw new Error("every corner needs a longitude (−180…180) and a latitude (−90…90)");
  }
  const last = pts[pts.length - 1];
  if (pts.length > 1 && last[0] === pts[0][0] && last[1] === pts[0][1]) pts.pop();
  if (pts.length < 3) throw new Error("a polygon needs at least three corners");
  return { type: "geo_polygon", points: pts };
}

/** WKT of a geopoint query. */
export function toWkt(geo) {
  if (!geo) return "";
  if (geo.type === "geo_polygon") {
    const ring = [...geo.points, geo.points[0]];
    return `POLYGON((${ring.map(([lon, lat]) => `${lon} ${lat}`).join(", ")}))`;
  }
  if (geo.type === "geo_bounding_box") {
    return `ENVELOPE(${geo.top_left.lon}, ${geo.bottom_right.lon}, ${geo.top_left.lat}, ${geo.bottom_right.lat})`;
  }
  if (geo.type === "geo_distance") return `POINT(${geo.lon} ${geo.lat}) buffered by ${geo.distance}`;
  return "";
}
