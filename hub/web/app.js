// The hub's status page: the document of `govedge hub status --json` (hub/README.md, "Status").
"use strict";

(() => {
  const { el, duration, ago, number, table, facts } = govedge;
  const size = (n) => (n === null || n === undefined ? "—" : n >= 1e9 ? `${(n / 1e9).toFixed(1)} GB`
    : `${(n / 1e6).toFixed(1)} MB`);
  const yes = (b) => (b === null || b === undefined ? "—" : b ? "yes" : "no");

  function render(doc, now) {
    const state = document.getElementById("state");
    state.className = doc.ok ? "state ok" : "state problem";
    state.textContent = doc.ok ? "OK" : `${doc.problems.length} PROBLEM${doc.problems.length > 1 ? "S" : ""}`;
    const out = [];
    if (doc.problems.length) {
      out.push(el("h2", { text: "Problems" }),
        el("ul", { class: "problems", id: "problems" },
          ...doc.problems.map((p) => el("li", { class: "problem-text", text: p }))));
    }
    out.push(el("h2", { text: `Gateways (${doc.gateways.length})` }));
    if (doc.gateways.length) {
      out.push(table([
        ["gateway", (g) => g.gateway_id],
        ["last heard", (g) => (g.last_heard === null ? "never" : `${ago(g.last_heard, now)} (${g.heard_by})`)],
        ["heartbeat", (g) => (g.heartbeat_s === null ? "—" : duration(g.heartbeat_s))],
        ["waiting", (g) => number(g.unbatched), "num"],
        ["unconfirmed batches", (g) => number(g.unconfirmed_batches), "num"],
        ["oldest unconfirmed", (g) => (g.oldest_unconfirmed_batch === null ? "—" : ago(g.oldest_unconfirmed_batch, now))],
        ["epochs not anchored", (g) => number(g.epochs_unanchored), "num"],
        ["disk free", (g) => size(g.store_free_bytes), "num"],
        ["clock synchronized", (g) => yes(g.clock_synchronized)],
        ["devices", (g) => number(g.devices_total), "num"],
        ["problems", (g) => g.problems.join("; ")],
      ], doc.gateways, (g) => g.problems.length > 0, "gateways"));
    } else {
      out.push(el("p", { class: "muted", text: "No gateway is known: govedge hub add-gateway adds one." }));
    }
    out.push(el("h2", { text: `Devices (${doc.devices.length})` }));
    if (doc.devices.length) {
      out.push(table([
        ["device", (d) => d.device_id],
        ["gateway", (d) => d.gateway_id ?? "—"],
        ["last seen", (d) => (d.last_seen === null ? "never" : ago(d.last_seen, now))],
        ["last seq", (d) => number(d.last_seq), "num"],
        ["interval", (d) => (d.interval_s === null ? "—" : duration(d.interval_s))],
        ["state", (d) => (d.silent ? `SILENT for ${duration(d.silent_for_s)}` : d.last_seen === null ? "never seen" : "ok")],
      ], doc.devices, (d) => d.silent, "devices"));
    } else {
      out.push(el("p", { class: "muted", text: "No device in the registry or in a gateway's status record." }));
    }
    out.push(el("h2", { text: "Hub" }), facts([["store", doc.store],
      ["silent after", `${doc.silent_after} heartbeats of a gateway, intervals of a device`]]));
    return out;
  }

  govedge.start(render);
})();
