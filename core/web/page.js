// What the status pages share: fetching the service's status document, and building the page from it
// with textContent only (a device id, a topic or an error text is shown as text, never run as markup).
"use strict";

const govedge = (() => {
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.className = value;
      else node.setAttribute(key, String(value));
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  // seconds as a technician reads them: "41 s", "12 min", "3.5 h", "2.0 d"
  function duration(s) {
    if (s === null || s === undefined) return "—";
    s = Math.max(0, s);
    if (s < 120) return `${Math.round(s)} s`;
    if (s < 7200) return `${Math.round(s / 60)} min`;
    if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
    return `${(s / 86400).toFixed(1)} d`;
  }

  function ago(t, now) { return t === null || t === undefined ? "never" : `${duration(now - t)} ago`; }

  function number(n) { return n === null || n === undefined ? "—" : String(n); }

  // a table whose rows come from `rows` and whose columns are [heading, value(row), class?]; a row for which
  // problem(row) is true is marked; every cell carries its heading for the card layout at phone width
  function table(columns, rows, problem, id) {
    const head = el("tr", {}, ...columns.map(([heading]) => el("th", { text: heading, scope: "col" })));
    const body = el("tbody", {}, ...rows.map((row) => el("tr", { class: problem && problem(row) ? "problem" : "" },
      ...columns.map(([heading, value, cls]) => el("td", { text: value(row), "data-label": heading, class: cls })))));
    return el("table", { id }, el("thead", {}, head), body);
  }

  function facts(pairs) {
    const dl = el("dl", { class: "facts" });
    for (const [term, value, cls] of pairs) dl.append(el("dt", { text: term }), el("dd", { text: value, class: cls }));
    return dl;
  }

  // fetch api/status every refresh_s seconds and hand each document to render(doc, now); a failed fetch
  // keeps the last page and says so above it
  async function start(render) {
    const page = await (await fetch("api/page")).json();
    document.title = page.title;
    document.getElementById("title").textContent = page.title;
    const content = document.getElementById("content");
    const trouble = document.getElementById("trouble");
    const updated = document.getElementById("updated");
    async function once() {
      try {
        const response = await fetch("api/status", { cache: "no-store" });
        const doc = await response.json();
        if (!response.ok) throw new Error(doc.error || `HTTP ${response.status}`);
        // ages are told by the service's clock, not the phone's (which may be off by hours)
        const now = doc.at ?? doc.now ?? Date.now() / 1000;
        content.replaceChildren(...render(doc, now));
        trouble.replaceChildren();
        trouble.hidden = true;
        updated.textContent = `updated ${new Date().toLocaleTimeString()}, every ${page.refresh_s} s`;
      } catch (err) {
        trouble.hidden = false;
        trouble.replaceChildren(el("span", { text: `The status could not be read: ${err.message}` }));
      }
    }
    await once();
    setInterval(once, page.refresh_s * 1000);
  }

  return { el, duration, ago, number, table, facts, start };
})();
