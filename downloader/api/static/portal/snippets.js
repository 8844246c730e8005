// The same request as curl, Python, R or `downloader fetch`, and a finished download's
// citation as text, BibTeX and RIS: all made from the same JSON the page sends.

function sh(text) {
  return "'" + String(text).replace(/'/g, "'\\''") + "'";
}

function rstr(text) {
  return '"' + String(text).replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"';
}

/** The snippet of `kind` for `body` (the JSON POST body) against `origin`. */
export function snippet(kind, body, origin, link) {
  const rq = JSON.stringify(body.rq || {});
  const extra = Object.entries(body).filter(([k]) => k !== "rq");
  switch (kind) {
    case "link":
      return link;
    case "curl": {
      const params = new URLSearchParams({ rq });
      for (const [k, v] of extra) params.set(k, typeof v === "string" ? v : JSON.stringify(v));
      return `curl -g ${sh(`${origin}/v2/download/?${params.toString()}`)}`;
    }
    case "curl-post":
      return `curl ${sh(`${origin}/v2/download`)} -H 'Content-Type: application/json' \\\n     -d ${sh(JSON.stringify(body))}`;
    case "python":
      return [
        "import hashlib, time, requests",
        "",
        `BASE = ${JSON.stringify(origin)}`,
        `body = ${JSON.stringify(body, null, 4).replace(/\btrue\b/g, "True").replace(/\bfalse\b/g, "False").replace(/\bnull\b/g, "None")}`,
        'job = requests.post(f"{BASE}/v2/download", json=body, timeout=60).json()',
        'while not job["complete"]:',
        "    time.sleep(5)",
        '    job = requests.get(f"{BASE}/v2/download/{job[\'id\']}", timeout=60).json()',
        '    print(f"{job[\'percent_complete\']:.0f}%", end="\\r")',
        'if job["task_status"] != "SUCCESS":',
        '    raise SystemExit(job.get("error"))',
        'path = job["filename"]',
        'with requests.get(job["download_url"], stream=True, timeout=60) as r, open(path, "wb") as f:',
        "    for chunk in r.iter_content(1 << 20):",
        "        f.write(chunk)",
        'digest = hashlib.sha256(open(path, "rb").read()).hexdigest()',
        'assert digest == job["checksum"]["value"], "checksum mismatch"',
        'print("saved", path)',
      ].join("\n");
    case "r":
      return [
        "library(httr2)",
        "",
        `base <- ${rstr(origin)}`,
        `body <- jsonlite::fromJSON(${rstr(JSON.stringify(body))}, simplifyVector = FALSE)`,
        'job <- request(paste0(base, "/v2/download")) |> req_body_json(body) |> req_perform() |> resp_body_json()',
        "while (!isTRUE(job$complete)) {",
        "  Sys.sleep(5)",
        '  job <- request(paste0(base, "/v2/download/", job$id)) |> req_perform() |> resp_body_json()',
        "}",
        'stopifnot(job$task_status == "SUCCESS")',
        "download.file(job$download_url, job$filename, mode = \"wb\")",
        "stopifnot(digest::digest(file = job$filename, algo = \"sha256\") == job$checksum$value)",
      ].join("\n");
    case "cli": {
      const flags = [];
      if (body.mq) flags.push(`--mq ${sh(JSON.stringify(body.mq))}`);
      if (body.form) flags.push(`--form ${body.form}`);
      if (body.core_type) flags.push(`--core-type ${body.core_type}`);
      if (body.email) flags.push(`--email ${sh(body.email)}`);
      return `downloader fetch ${sh(rq)} --server ${sh(origin)}${flags.length ? " " + flags.join(" ") : ""}`;
    }
    default:
      return "";
  }
}

// --- citations ---------------------------------------------------------------------------

function day(iso) {
  return (iso || new Date().toISOString()).slice(0, 10);
}

export function citation(job, { publisher, sentence }) {
  const n = (job.counts && job.counts.records) ?? job.total_records ?? 0;
  const sets = job.recordsets ?? "several";
  return (
    `${publisher} (${day(job.completed).slice(0, 4)}). Darwin Core Archive download ${job.id}: ` +
    `${Number(n).toLocaleString("en")} records from ${sets} recordset${sets === 1 ? "" : "s"}. ` +
    `${sentence}. Accessed ${day(job.completed)} at ${job.download_url || job.status_url}` +
    (job.checksum ? ` (sha256 ${job.checksum.value})` : "") +
    ". Each record keeps the licence of its recordset; see the archive's citations."
  );
}

export function bibtex(job, { publisher, sentence }) {
  const key = "dwca_" + String(job.id).split("-")[0];
  const esc = (s) => String(s).replace(/[{}]/g, "");
  return [
    `@misc{${key},`,
    `  title        = {{Darwin Core Archive download ${job.id}}},`,
    `  author       = {{${esc(publisher)}}},`,
    `  year         = {${day(job.completed).slice(0, 4)}},`,
    `  howpublished = {\\url{${job.download_url || job.status_url}}},`,
    `  note         = {${esc(sentence)}; ${(job.counts && job.counts.records) ?? job.total_records ?? 0} records` +
      (job.checksum ? `; sha256 ${job.checksum.value}` : "") +
      `; accessed ${day(job.completed)}},`,
    "}",
  ].join("\n");
}

export function ris(job, { publisher, sentence }) {
  return [
    "TY  - DATA",
    `TI  - Darwin Core Archive download ${job.id}`,
    `AU  - ${publisher}`,
    `PY  - ${day(job.completed).slice(0, 4)}`,
    `DA  - ${day(job.completed).replace(/-/g, "/")}`,
    `UR  - ${job.download_url || job.status_url}`,
    `N1  - ${sentence}; ${(job.counts && job.counts.records) ?? job.total_records ?? 0} records` +
      (job.checksum ? `; sha256 ${job.checksum.value}` : ""),
    "ER  - ",
  ].join("\n");
}
