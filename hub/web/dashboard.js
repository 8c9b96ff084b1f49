// The hub's data dashboard (hub/README.md, "Data dashboard"): the stations on a plan of their positions, each
// station's quantities plotted over a period (plotly.js), the days over the EU daily limit values, and any
// plotted value's proof checked link by link. Everything is read from the hub itself: its SensorThings API
// (v1.1), /api/daily and /api/verify. Text from the data (a device id, a place, a unit) is only ever set as
// textContent, or handed to plotly escaped.
"use strict";

(() => {
  const { el } = govedge;
  const SVG = "http://www.w3.org/2000/svg";
  const DAY_MS = 86400000;
  const KM_PER_DEGREE = 111.32; // of latitude, and of longitude at the equator
  const $ = (id) => document.getElementById(id);
  const state = { things: [], thing: null, calendars: 0, periods: 0 };

  function trouble(text) {
    const box = $("trouble");
    box.hidden = !text;
    box.textContent = text || "";
  }

  async function json(url) {
    const response = await fetch(url, { cache: "no-store" });
    const text = await response.text();
    let doc = null;
    try { doc = JSON.parse(text); } catch (err) { /* said below */ }
    if (!response.ok) {
      const error = new Error((doc && doc.message) || `HTTP ${response.status} for ${url}`);
      error.status = response.status;
      throw error;
    }
    if (doc === null) throw new Error(`${url} did not answer JSON`);
    return doc;
  }

  const quoted = (id) => `('${encodeURIComponent(String(id).replace(/'/g, "''"))}')`;
  const query = (options) => Object.entries(options).map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join("&");
  // plotly reads its labels as a small HTML subset: data shown in them is escaped to stay text
  const plain = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const dayOf = (ms) => new Date(ms).toISOString().slice(0, 10);
  const place = (thing) => {
    const loc = located(thing);
    return (loc && ((loc.properties && loc.properties.place) || loc.name)) || (thing.properties || {}).place || "";
  };

  // the thing's current position: its Location (the newest of the registry's), a GeoJSON Point
  function located(thing) {
    const locs = thing.Locations || [];
    const loc = locs[locs.length - 1];
    const c = loc && loc.location && loc.location.type === "Point" && loc.location.coordinates;
    return c && Number.isFinite(c[0]) && Number.isFinite(c[1]) ? loc : null;
  }

  // --- the plan -------------------------------------------------------------------------------------------

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  // a length of 1, 2 or 5 times a power of ten kilometres, at most `most`
  function niceKm(most) {
    let best = 0.001;
    for (let p = -3; p <= 4; p++) for (const m of [1, 2, 5]) if (m * 10 ** p <= most) best = m * 10 ** p;
    return best;
  }

  // a label shortened with "…" until it fits in `room` pixels
  function fit(label, room) {
    const full = label.textContent;
    if (label.getComputedTextLength() <= room) return;
    label.setAttribute("data-full", full);
    let n = full.length;
    while (n > 1 && label.getComputedTextLength() > room) label.textContent = `${full.slice(0, --n)}…`;
  }

  function drawPlan(things) {
    const plan = $("plan");
    // the drawing's units are the page's pixels (labels keep their size on a phone): as wide as its box
    const W = Math.round(Math.min(640, Math.max(300, plan.getBoundingClientRect().width || 640)));
    const H = Math.round(W * (W < 500 ? 0.9 : 0.66)), M = Math.round(Math.min(70, W / 5));
    const points = things.filter(located).map((t) => {
      const [lon, lat] = located(t).location.coordinates;
      return { thing: t, lon, lat };
    });
    plan.setAttribute("viewBox", `0 0 ${W} ${H}`);
    plan.replaceChildren();
    if (!points.length) {
      plan.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "No station has a location."));
    } else {
      const lons = points.map((p) => p.lon), lats = points.map((p) => p.lat);
      const lonC = (Math.min(...lons) + Math.max(...lons)) / 2, latC = (Math.min(...lats) + Math.max(...lats)) / 2;
      const kx = Math.cos((latC * Math.PI) / 180); // equirectangular: a degree of longitude is cos(lat) as long
      const dx = Math.max((Math.max(...lons) - Math.min(...lons)) * kx, 0.002);
      const dy = Math.max(Math.max(...lats) - Math.min(...lats), 0.002);
      const s = Math.min((W - 2 * M) / dx, (H - 2 * M) / dy); // pixels per degree of latitude
      const x = (lon) => W / 2 + (lon - lonC) * kx * s;
      const y = (lat) => H / 2 - (lat - latC) * s;
      // the scale bar, bottom left, and north
      const km = niceKm(((W / 4) / s) * KM_PER_DEGREE);
      const bar = (km / KM_PER_DEGREE) * s;
      plan.append(svg("line", { class: "bar", x1: 16, y1: H - 18, x2: 16 + bar, y2: H - 18 }),
        svg("line", { class: "bar", x1: 16, y1: H - 24, x2: 16, y2: H - 12 }),
        svg("line", { class: "bar", x1: 16 + bar, y1: H - 24, x2: 16 + bar, y2: H - 12 }),
        svg("text", { x: 16, y: H - 30, id: "scale" }, `${km >= 1 ? km : km * 1000} ${km >= 1 ? "km" : "m"}`),
        svg("path", { d: `M ${W - 28} 42 L ${W - 20} 18 L ${W - 12} 42 L ${W - 20} 36 Z`, fill: "currentColor" }),
        svg("text", { x: W - 20, y: 58, "text-anchor": "middle" }, "N"));
      for (const p of points) {
        const px = x(p.lon), py = y(p.lat);
        const left = px > W / 2; // the label on the side with more room
        const room = (left ? px : W - px) - 16;
        const g = svg("g", { class: "station", tabindex: 0, role: "button", "data-id": p.thing["@iot.id"],
          "data-x": px.toFixed(1), "data-y": py.toFixed(1) });
        const labels = [svg("text", { x: px + (left ? -11 : 11), y: py - 4, "text-anchor": left ? "end" : "start" },
          p.thing["@iot.id"]), svg("text", { class: "place", x: px + (left ? -11 : 11), y: py + 12,
          "text-anchor": left ? "end" : "start" }, place(p.thing))];
        g.append(svg("title", {}, `${p.thing["@iot.id"]}: ${place(p.thing)} (${p.lat}, ${p.lon})`),
          svg("circle", { cx: px, cy: py, r: 7 }), ...labels);
        g.addEventListener("click", () => select(p.thing));
        g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") select(p.thing); });
        plan.append(g);
        for (const label of labels) fit(label, room); // the whole text is the station's title (its tooltip)
      }
    }
    const unlocated = things.filter((t) => !located(t));
    $("unlocated").replaceChildren(...(unlocated.length ? unlocated.map((t) => el("li", {},
      (() => {
        const b = el("button", { type: "button", text: t["@iot.id"], "data-id": t["@iot.id"] });
        b.addEventListener("click", () => select(t));
        return b;
      })())) : [el("li", { class: "muted", text: "every station has one" })]));
  }

  // --- the plots ------------------------------------------------------------------------------------------

  async function everything(url) {
    // the rows of a dataArray answer, following its nextLinks
    const rows = [];
    while (url) {
      const doc = await json(url);
      for (const group of doc.value) {
        const at = Object.fromEntries(group.components.map((c, i) => [c, i]));
        for (const r of group.dataArray) rows.push([r[at.id], r[at.phenomenonTime], r[at.result]]);
      }
      url = doc["@iot.nextLink"];
    }
    return rows;
  }

  async function lastDay(thing) {
    // the newest observation of each datastream ($orderby=phenomenonTime desc&$top=1): the newest of them all
    const doc = await json(`v1.1/Things${quoted(thing["@iot.id"])}/Datastreams?${query({
      $select: "id", $expand: "Observations($orderby=phenomenonTime desc;$top=1;$select=phenomenonTime)" })}`);
    let newest = null;
    for (const ds of doc.value) {
      for (const o of ds.Observations || []) {
        const t = Date.parse(String(o.phenomenonTime).split("/").pop());
        if (Number.isFinite(t) && (newest === null || t > newest)) newest = t;
      }
    }
    return newest;
  }

  // a plot follows its box (a scrollbar appearing, a phone turned), not only the window
  const resized = new ResizeObserver((entries) => {
    for (const { target } of entries) {
      if (target.data && target.isConnected && target.offsetParent !== null) Plotly.Plots.resize(target);
    }
  });

  async function plot(thing, from, to) {
    const plots = $("plots");
    resized.disconnect(); // the boxes of the period before are replaced
    const start = `${from}T00:00:00Z`, end = `${dayOf(Date.parse(`${to}T00:00:00Z`) + DAY_MS)}T00:00:00Z`;
    const streams = (thing.Datastreams || []).slice().sort((a, b) => String(a["@iot.id"]).localeCompare(b["@iot.id"]));
    const boxes = streams.map((ds) => el("div", { class: "plot", id: `plot-${ds["@iot.id"]}`,
      "data-datastream": ds["@iot.id"] }));
    plots.replaceChildren(...boxes);
    $("period-note").textContent = streams.length ? `${start} to ${end}` : "This station has no datastream.";
    await Promise.all(streams.map(async (ds, i) => {
      const rows = await everything(`v1.1/Datastreams${quoted(ds["@iot.id"])}/Observations?${query({
        $filter: `phenomenonTime ge ${start} and phenomenonTime lt ${end}`, $orderby: "phenomenonTime",
        $top: 10000, $resultFormat: "dataArray", $select: "id,phenomenonTime,result" })}`);
      const unit = (ds.unitOfMeasurement && ds.unitOfMeasurement.symbol) || "";
      const name = (ds.ObservedProperty && ds.ObservedProperty.name) || ds.name;
      const times = rows.map((r) => String(r[1]).split("/").pop().replace("T", " ").replace("Z", ""));
      const box = boxes[i];
      if (!box.isConnected) return; // another station or period was chosen meanwhile
      await Plotly.newPlot(box, [{
        x: times, y: rows.map((r) => r[2]), customdata: rows.map((r) => r[0]), type: "scatter",
        mode: rows.length > 300 ? "lines" : "lines+markers", marker: { size: 5 }, line: { width: 1.5 },
        hovertemplate: `%{x} UTC<br>%{y} ${plain(unit)}<br>click to verify<extra></extra>`,
      }], {
        title: { text: plain(`${name}${rows.length ? "" : ": no observations in this period"}`), font: { size: 14 } },
        margin: { l: 56, r: 12, t: 36, b: 40 }, height: 280, autosize: true,
        xaxis: { type: "date", title: { text: "UTC" } }, yaxis: { title: { text: plain(unit) } },
        hovermode: "closest",
      }, { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] });
      box.on("plotly_click", (ev) => { if (ev.points.length) verify(ev.points[0].customdata); });
      resized.observe(box);
    }));
  }

  async function showPeriod(event) {
    if (event) event.preventDefault();
    const from = $("from").value, to = $("to").value;
    if (!from || !to || to < from) { trouble("Give a period: a from date on or before the to date."); return; }
    trouble("");
    try {
      await plot(state.thing, from, to);
    } catch (err) {
      trouble(`The observations could not be read: ${err.message}`);
    }
  }

  async function select(thing) {
    state.thing = thing;
    const chosen = ++state.periods;
    for (const g of document.querySelectorAll("#plan .station")) {
      g.classList.toggle("selected", g.getAttribute("data-id") === thing["@iot.id"]);
    }
    const where = place(thing);
    $("station-title").textContent = where ? `${thing["@iot.id"]} · ${where}` : thing["@iot.id"];
    $("station").hidden = false;
    $("verify").hidden = true;
    try {
      const newest = await lastDay(thing);
      if (chosen !== state.periods) return; // another station was chosen meanwhile
      const day = dayOf(newest === null ? Date.now() : newest);
      $("from").value = day;
      $("to").value = day;
      $("year").value = day.slice(0, 4);
      await showPeriod();
      if (chosen !== state.periods) return;
      const hasPm = (thing.Datastreams || []).some((ds) => /:(pm10|pm2_5)$/.test(ds["@iot.id"]));
      const every = spacing();
      if (every) $("interval").value = every;
      $("calendar-section").hidden = !hasPm;
      if (hasPm) await calendar();
      else $("calendars").replaceChildren();
    } catch (err) {
      trouble(`The station ${thing["@iot.id"]} could not be read: ${err.message}`);
    }
  }

  // the station's reading interval as its plotted readings are spaced (the median step, to the nearest whole
  // division of an hour), for the report's hourly slots; null when too few are plotted
  function spacing() {
    const steps = [];
    for (const box of document.querySelectorAll(".plot")) {
      const t = (box.data && box.data[0].x || []).map((x) => Date.parse(`${x.replace(" ", "T")}Z`));
      for (let i = 1; i < t.length; i++) if (t[i] > t[i - 1]) steps.push((t[i] - t[i - 1]) / 1000);
    }
    if (steps.length < 2) return null;
    steps.sort((a, b) => a - b);
    const median = steps[Math.floor(steps.length / 2)];
    const divisors = [];
    for (let d = 1; d <= 3600; d++) if (3600 % d === 0) divisors.push(d);
    return divisors.reduce((best, d) => (Math.abs(d - median) < Math.abs(best - median) ? d : best), 60);
  }

  // --- the calendar ---------------------------------------------------------------------------------------

  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const LABEL = { pm10: "PM10", pm2_5: "PM2.5" };

  async function calendar(event) {
    if (event) event.preventDefault();
    const year = Number($("year").value), interval = $("interval").value;
    const box = $("calendars");
    const asked = ++state.calendars; // a station or year chosen since makes this answer stale
    let doc;
    try {
      doc = await json(`api/daily?${query({ station: state.thing["@iot.id"], year, interval })}`);
      if (asked !== state.calendars) return;
    } catch (err) {
      if (asked !== state.calendars) return;
      box.replaceChildren(el("p", { class: "error", id: "calendar-missing", text: `No calendar: ${err.message}` }));
      return;
    }
    const slots = Math.round(3600 / doc.interval_s);
    $("calendar-method").textContent = `Daily means as govedge hub report computes them (${doc.method}): hourly `
      + `means valid with ${Math.round(fraction(doc.valid_hour) * 100)} % of the hour's ${slots} reading slot${
        slots > 1 ? "s" : ""}, a daily mean from at least ${doc.valid_day_hours} valid hours.`;
    const out = [];
    for (const [name, q] of Object.entries(doc.quantities)) {
      const limits = doc.limits.filter((l) => l.quantity === name);
      const byDate = Object.fromEntries(q.days.map((d) => [d.date, d]));
      const grid = el("div", { class: "calendar", id: `calendar-${name}`, role: "grid",
        "aria-label": `${LABEL[name] || name} daily means ${year}` });
      grid.append(el("span", {}), ...Array.from({ length: 31 }, (_, i) => el("span", { class: "num", text: i + 1 })));
      for (let m = 0; m < 12; m++) {
        grid.append(el("span", { class: "month", text: MONTHS[m] }));
        for (let d = 1; d <= 31; d++) {
          const date = new Date(Date.UTC(year, m, d));
          if (date.getUTCMonth() !== m) { grid.append(el("span", { class: "day none" })); continue; }
          const iso = dayOf(date.getTime());
          const day = byDate[iso];
          let cls = "empty", tip = `${iso}: no readings`;
          const over = [];
          if (day && day.mean === null) {
            cls = "short";
            tip = `${iso}: ${day.valid_hours} valid hours, fewer than ${doc.valid_day_hours}: no daily mean`;
          } else if (day) {
            for (const l of limits) if (Number(day.mean) > Number(l.value)) over.push(l);
            const inForce = over.filter((l) => l.from <= iso);
            cls = inForce.length ? "over" : over.length ? "over-later" : "under";
            tip = `${iso}: ${day.mean} ${q.unit === "ug/m3" ? "µg/m³" : q.unit} from ${day.valid_hours} valid hours`
              + over.map((l) => `; over ${l.value} (${l.id})`).join("");
          }
          grid.append(el("span", { class: `day ${cls}`, title: tip, "data-date": iso,
            "data-mean": day && day.mean !== null ? day.mean : null, "data-over": over.map((l) => l.id).join(" ") }));
        }
      }
      const summary = el("ul", { class: "assessment", id: `assessment-${name}` }, ...q.assessment.map((a) => {
        const limit = doc.limits.find((l) => l.id === a.limit);
        if (!limit) return null;
        const later = limit.from > `${year}-12-31`; // a limit value not yet in force that year: what it would say
        const verdict = a.exceeded === null || a.exceeded === undefined ? "not assessable (too few valid days)"
          : `${later ? "would be " : ""}${a.exceeded ? "exceeded" : "kept"}`;
        return el("li", { "data-limit": a.limit, "data-days-over": a.days_over,
          text: `${a.days_over} days over ${limit.value} µg/m³ (${limit.allowed} allowed a year from ${limit.from}): `
            + `${verdict}. ${limit.source}` });
      }));
      out.push(el("h3", { text: `${LABEL[name] || name}, ${year}` }), grid, summary);
    }
    box.replaceChildren(...out);
  }

  // "3/4" as the number it names (the method gives its fraction as text)
  function fraction(text) {
    const [a, b] = String(text).split("/").map(Number);
    return b ? a / b : a;
  }

  // --- verify ---------------------------------------------------------------------------------------------

  const LINK_NAMES = {
    reading: "1. The device-signed message",
    device_signature: "2. The device's signature",
    batch_path: "3. The reading in its batch (Merkle path to the batch root)",
    epoch_path: "4. The batch in its epoch (Merkle path to the epoch root)",
    anchor_receipt: "5. The anchor receipt",
    chain: "6. The chain itself",
  };

  function facts(pairs) {
    return govedge.facts(pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
      .map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)]));
  }

  function hashes(list) {
    return list.length ? el("ol", { class: "path", start: 0 }, ...list.map((h) => el("li", { class: "hash", text: h })))
      : el("p", { class: "muted", text: "(no sibling hashes: the tree has one leaf)" });
  }

  function detail(link, parts, bundleUrl) {
    const r = parts.reading, b = parts.batch, e = parts.epoch, a = parts.anchor;
    switch (link) {
      case "reading": return [facts([["device", r.device], ["sequence number", r.seq],
        ["signed at", r.time || "no time"], ["size", `${r.bytes} bytes`]]), el("pre", { text: r.message })];
      case "device_signature": return [facts([["algorithm", r.algorithm], ["device key id", r.key ? r.key.id : "—"],
        ["key status", r.key ? r.key.status : "—"]]), el("pre", { text: r.signature })];
      case "batch_path": return [facts([["batch", b.id], ["leaf", b.leaf_index], ["batch gateway", b.head.gateway],
        ["batch sequence", b.head.seq], ["batch created", b.head.created], ["mode", b.head.mode],
        ["messages in batch", b.head.size], ["batch root", b.head.root], ["store", b.head.store]]),
        el("p", { class: "muted", text: "The gateway's signed batch, as its head (every value of it is inside the "
          + "gateway's signature), and the path from the reading's leaf to its root:" }), hashes(b.path)];
      case "epoch_path": return [facts([["gateway", e.gateway], ["store", e.store], ["epoch", e.number],
        ["batches in epoch", e.size], ["batch's leaf", e.leaf_index], ["epoch root", e.root]]), hashes(e.path)];
      case "anchor_receipt": return a ? [facts([["backend", a.backend], ["chain", a.chain],
        ["transaction", a.reference], ["block", a.block],
        ["block time", a.block_time ? new Date(a.block_time * 1000).toISOString() : null], ["anchored root", a.root]])]
        : [];
      case "chain": return [el("p", { text: "The anchor is checked on the chain by govedge verify with the chain's "
        + "address: this page checks the proof offline, as govedge verify without --rpc does." })];
      default: return [];
    }
  }

  function command(doc) {
    const a = doc.parts.anchor || {};
    const chain = a.backend === "rest" ? "--observer OBSERVER_URL" : "--rpc RPC_URL --contract CONTRACT_ADDRESS";
    return `curl -so bundle.json '${doc.bundle}'\ngovedge verify bundle.json --registry registry.json ${chain}`;
  }

  async function verify(observationId) {
    const section = $("verify");
    section.hidden = false;
    $("verify-title").textContent = `Verify observation ${observationId}`;
    $("verify-reading").replaceChildren();
    $("links").replaceChildren();
    $("verify-chain").replaceChildren();
    const said = $("verify-state");
    said.className = "muted";
    said.textContent = "checking…";
    section.scrollIntoView({ block: "start" });
    let obs;
    try {
      obs = await json(`v1.1/Observations${quoted(observationId)}`);
    } catch (err) {
      said.className = "problem-text";
      said.textContent = `The observation could not be read: ${err.message}`;
      return;
    }
    const p = obs.parameters || {};
    // the result with the digits the node signed ("44.0", which JSON.parse would make 44): its raw value
    let signed = String(obs.result);
    try {
      const raw = await fetch(`v1.1/Observations${quoted(observationId)}/result/$value`, { cache: "no-store" });
      if (raw.ok) signed = await raw.text();
    } catch (err) { /* the parsed result stands */ }
    const quantity = String(observationId).split(":").pop();
    const ds = state.thing && (state.thing.Datastreams || []).find((d) => d["@iot.id"].split(":").pop() === quantity);
    const unit = ds && ds.unitOfMeasurement ? ` ${ds.unitOfMeasurement.symbol}` : "";
    $("verify-reading").replaceChildren(el("h3", { text: "The observation and its provenance" }), facts([
      ["observation", obs["@iot.id"]], ["time", obs.phenomenonTime], ["result", `${signed}${unit}`],
      ["device", p.device], ["sequence number", p.seq], ["gateway", p.gateway], ["batch", p.batch],
      ["leaf", p.leaf], ["time source", p.timeSource], ["flag", p.flag], ["proof bundle", p.proof]]));
    let doc;
    try {
      doc = await json(`api/verify/${encodeURIComponent(p.device)}/${encodeURIComponent(p.seq)}`);
    } catch (err) {
      said.className = "problem-text";
      said.textContent = err.status === 404 ? `No proof yet: ${err.message}` : `The proof could not be checked: ${
        err.message}`;
      return;
    }
    said.className = doc.result === "proven" ? "ok-text" : "problem-text";
    said.textContent = doc.result === "proven"
      ? "Every link checked here holds: the reading is the device's, in the gateway's batch, in the anchored epoch."
      : `${doc.meaning}.`;
    $("links").replaceChildren(...doc.links.map((l) => {
      // the receipt's offline checks (its root is the epoch's, it names a block) held; its block is the chain's to say
      const offline = l.link === "anchor_receipt" && l.status === "not checked";
      const cls = offline ? "ok" : { ok: "ok", failed: "failed", "could not check": "unchecked" }[l.status]
        || "not-checked";
      const word = offline ? "valid offline" : { ok: "valid", failed: "FAILED", "could not check": "could not check",
        "not checked": "not checked here", "not reached": "not reached" }[l.status] || l.status;
      return el("li", { class: cls, "data-link": l.link, "data-status": l.status },
        el("div", {}, el("span", { class: "verdict", text: word }), " ",
          el("strong", { text: LINK_NAMES[l.link] || l.link })),
        el("p", { text: l.text }), ...(l.status === "not reached" ? [] : detail(l.link, doc.parts, doc.bundle)));
    }));
    $("verify-chain").replaceChildren(el("h3", { text: "On the chain" }),
      el("p", { text: "The anchor receipt's block is the receipt's word until the chain is asked: govedge verify "
        + "--rpc checks that the chain holds the epoch root in that block. With the hub's registry:" }),
      el("pre", { id: "verify-command", text: command(doc) }),
      el("p", {}, "The bundle: ", el("a", { href: doc.bundle, text: doc.bundle })));
  }

  // --- start ----------------------------------------------------------------------------------------------

  async function start() {
    $("period").addEventListener("submit", showPeriod);
    $("calendar-form").addEventListener("submit", calendar);
    if (typeof Plotly === "undefined") {
      trouble("plotly.js is missing from the hub's install: pip install 'govchain-edge[hub]' installs it.");
      return;
    }
    try {
      const doc = await json(`v1.1/Things?${query({ $top: 1000,
        $expand: "Locations,Datastreams($expand=ObservedProperty)" })}`);
      state.things = doc.value;
    } catch (err) {
      trouble(`The stations could not be read: ${err.message}`);
      return;
    }
    drawPlan(state.things);
    let width = $("plan").getBoundingClientRect().width;
    window.addEventListener("resize", () => {
      const now = $("plan").getBoundingClientRect().width;
      if (Math.abs(now - width) < 8) return;
      width = now;
      drawPlan(state.things);
      if (state.thing) for (const g of document.querySelectorAll("#plan .station")) {
        g.classList.toggle("selected", g.getAttribute("data-id") === state.thing["@iot.id"]);
      }
    });
    const first = state.things.find(located) || state.things[0];
    if (first) await select(first);
  }

  start();
})();
