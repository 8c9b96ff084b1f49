// The gateway's status page: the document of `govedge gateway status --json` (gateway/README.md, "status").
"use strict";

(() => {
  const { el, duration, ago, number, table, facts } = govedge;
  const mb = (n) => (n === null || n === undefined ? "—" : n >= 1e9 ? `${(n / 1e9).toFixed(1)} GB`
    : `${(n / 1e6).toFixed(1)} MB`);
  const volts = (v) => (v === null || v === undefined ? "—" : `${Number(v).toFixed(2)} V`);
  const counts = (by) => Object.entries(by || {}).map(([k, n]) => `${k} ${n}`).join(", ") || "none";

  function verdict(doc) {
    const state = document.getElementById("state");
    if (!doc.service.running) {
      state.className = "state stopped";
      state.textContent = "NOT RUNNING";
    } else if (doc.problems.length) {
      state.className = "state problem";
      state.textContent = `${doc.problems.length} PROBLEM${doc.problems.length > 1 ? "S" : ""}`;
    } else {
      state.className = "state ok";
      state.textContent = "OK";
    }
  }

  function render(doc, now) {
    document.getElementById("title").textContent = `gateway ${doc.gateway_id}`;
    document.title = `gateway ${doc.gateway_id}`;
    verdict(doc);
    const out = [];
    const svc = doc.service;
    if (doc.problems.length) {
      out.push(el("h2", { text: "Problems" }),
        el("ul", { class: "problems", id: "problems" },
          ...doc.problems.map((p) => el("li", { class: "problem-text", text: p }))));
    }
    out.push(el("h2", { text: "Service" }), facts([
      ["service", svc.running
        ? `running for ${duration(now - svc.started_at)} (process ${svc.pid}, ${svc.verify_workers} verification workers)`
        : `not running: ${svc.why}`, svc.running ? "" : "problem-text"],
      ...Object.entries(doc.parts).sort().map(([name, part]) => [name,
        `${part.ok ? "" : "PROBLEM: "}${part.state} for ${duration(now - part.since)}`, part.ok ? "" : "problem-text"]),
    ]));

    out.push(el("h2", { text: `Nodes (${doc.nodes.length})` }));
    if (doc.nodes.length) {
      out.push(table([
        ["device", (n) => n.device_id],
        ["last seen", (n) => (n.last_seen === null ? "never" : ago(n.last_seen, now))],
        ["last seq", (n) => number(n.last_seq), "num"],
        ["interval", (n) => (n.interval_s === null ? "—" : duration(n.interval_s))],
        ["health", (n) => (n.health === null ? "—" : String(n.health))],
        ["supply", (n) => volts(n.vsupply_v), "num"],
        ["buffered", (n) => number(n.buffer_pending), "num"],
        ["quarantined", (n) => number(n.quarantined), "num"],
        ["held back 24 h", (n) => number(n.held_back_24h), "num"],
        ["note", (n) => [n.silent ? "SILENT" : "", n.in_registry === false ? "not in the registry" : "",
          n.error || ""].filter(Boolean).join("; ")],
      ], doc.nodes, (n) => n.silent || n.in_registry === false, "nodes"));
    } else {
      out.push(el("p", { class: "muted", text: "No node has sent anything yet, and the registry names none." }));
    }

    const b = doc.batches;
    const a = doc.anchoring;
    const s = doc.store;
    const q = doc.quarantine;
    out.push(el("h2", { text: "Data" }), facts([
      ["last reading", doc.readings.last_received_at === null ? "none received yet" : ago(doc.readings.last_received_at, now)],
      ["waiting", `${doc.readings.waiting_for_batch} readings for the next batch`],
      ["batches", b.last === null ? "none made yet"
        : `${b.unconfirmed} not yet confirmed by the hub` + (b.oldest_unconfirmed_at === null ? ""
          : `, the oldest made ${ago(b.oldest_unconfirmed_at, now)}`) + `; the last #${b.last}`],
      ["anchoring", a.backend === "none" ? `${a.epochs} epochs, not anchored (backend none)`
        : a.epochs === 0 ? "no epoch closed yet"
          : a.unanchored ? `${a.unanchored} of ${a.epochs} epochs not yet on the chain, the oldest closed `
            + `${ago(a.oldest_unanchored_at, now)}` + (a.last_error ? ` (last error: ${a.last_error})` : "")
            : `${a.epochs} epochs, every one anchored`],
      ["quarantine", `${q.kept} messages (${counts(q.by_code)})` + (q.pruned ? `; ${q.pruned} older deleted` : "")],
      ["held back", `${doc.held_back.last_24h} values in 24 h (${counts(doc.held_back.by_rule)})`],
      ["disk", `${mb(s.free_bytes)} free of ${mb(s.total_bytes)}, reserve ${mb(s.reserve_bytes)}; the store `
        + `${mb(s.file_bytes)} of its quota ${mb(s.max_bytes)}` + (s.refusing ? ": REFUSING messages" : ""),
      s.refusing ? "problem-text" : ""],
      ["dropped", `${s.dropped} (disk quota, policy ${s.policy})`],
    ]));
    return out;
  }

  govedge.start(render);
})();
