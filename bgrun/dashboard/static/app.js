// bgrun dashboard: local times, a self-refreshing job list, a job page that follows its job.
// Loaded from 'self' only (the CSP forbids inline script). Builds DOM with textContent:
// job fields are never parsed as HTML.
"use strict";

(function () {
  const ACTIVE = ["scheduled", "queued", "running"];
  const LIST_EVERY = 2000;
  const JOB_EVERY = 1000;

  function localTime(iso) {
    // Python writes microseconds; keep milliseconds, which every Date parser reads.
    const date = new Date(iso.replace(/(\.\d{3})\d+/, "$1"));
    if (isNaN(date.getTime())) return iso;
    return date.toLocaleString(undefined, {
      year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
  }

  function localizeTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      const iso = el.getAttribute("datetime");
      el.textContent = localTime(iso);
      el.title = iso;
    });
  }

  function duration(seconds) {
    if (seconds === null) return "-";
    seconds = Math.max(0, seconds);
    if (seconds < 10) return seconds.toFixed(2) + " s";
    const whole = Math.floor(seconds);
    const units = [[86400, "d", 3600, "h"], [3600, "h", 60, "min"], [60, "min", 1, "s"]];
    for (const [size, unit, small, smallUnit] of units) {
      if (whole >= size) {
        return Math.floor(whole / size) + " " + unit + " " +
          Math.floor((whole % size) / small) + " " + smallUnit;
      }
    }
    return whole + " s";
  }

  function ran(job) {
    if (!job.started_at) return null;
    const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
    return (end - Date.parse(job.started_at)) / 1000;
  }

  // Bidirectional controls would reorder what the reader sees: spell them out, as the
  // server does in its pages (present.visible).
  const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

  function visible(text) {
    return text.replace(BIDI, function (c) {
      return "[U+" + c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0") + "]";
    });
  }

  function el(tag, props, children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    if (props && typeof props.textContent === "string") {
      node.textContent = visible(props.textContent);
    }
    (children || []).forEach(function (child) {
      node.append(child);
    });
    return node;
  }

  function truncate(text, width) {
    return text.length <= width ? text : text.slice(0, width - 1) + "…";
  }

  function row(job, jobBase) {
    const href = jobBase + encodeURIComponent(job.id);
    const created = el("time", { dateTime: job.created_at, textContent: job.created_at });
    const name = el("a", { href: href, textContent: job.target }, [
      el("span", { className: "method", textContent: "." + job.method }),
    ]);
    const tr = el("tr", { className: "status-" + job.status }, [
      el("td", { className: "id" }, [el("a", { href: href, textContent: job.id })]),
      el("td", {}, [el("span", { className: "badge " + job.status, textContent: job.status })]),
      el("td", { className: "name" }, [name]),
      el("td", { className: "num", textContent: job.attempts + "/" + (job.retries + 1) }),
      el("td", { className: "num", textContent: String(job.priority) }),
      el("td", {}, [created]),
      el("td", { className: "num", textContent: duration(ran(job)) }),
      el("td", { className: "error", textContent: truncate(job.error || "", 90) }),
    ]);
    tr.dataset.id = job.id;
    return tr;
  }

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) {
      window.location.reload(); // the session ended: the page sends us to sign in
      throw new Error("signed out");
    }
    if (!response.ok) throw new Error(url + ": " + response.status);
    return response.json();
  }

  async function refreshList(body) {
    const query = new URLSearchParams(window.location.search).toString();
    const [jobs, counts] = await Promise.all([
      getJSON(body.dataset.api + (query ? "?" + query : "")),
      getJSON(body.dataset.countsApi),
    ]);
    const rows = document.getElementById("job-rows");
    rows.replaceChildren.apply(rows, jobs.map(function (job) {
      return row(job, body.dataset.jobBase);
    }));
    localizeTimes(rows);
    document.getElementById("empty").hidden = jobs.length > 0;
    document.querySelectorAll("[data-count]").forEach(function (node) {
      node.textContent = String(counts[node.dataset.count] || 0);
    });
    const live = document.getElementById("live");
    live.textContent = "updated " + new Date().toLocaleTimeString();
  }

  function followList(body) {
    async function tick() {
      if (!document.hidden) {
        try {
          await refreshList(body);
        } catch (err) {
          document.getElementById("live").textContent = "not updating: " + err.message;
        }
      }
      window.setTimeout(tick, LIST_EVERY);
    }
    window.setTimeout(tick, LIST_EVERY);
  }

  async function pullOutput(body, pre) {
    const url = body.dataset.outputApi + "?offset=" + encodeURIComponent(pre.dataset.next);
    const chunk = await getJSON(url);
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    if (chunk.reset) pre.textContent = "";
    if (chunk.text) pre.append(chunk.text);
    pre.dataset.next = String(chunk.next);
    if (atBottom) pre.scrollTop = pre.scrollHeight;
    return chunk.next > chunk.offset;
  }

  function followJob(body) {
    const pre = document.getElementById("output");
    async function tick() {
      try {
        while (await pullOutput(body, pre)) { /* catch up with a long output */ }
        const job = await getJSON(body.dataset.api);
        if (job.status !== body.dataset.status) {
          window.location.reload(); // the page shows the new state, actions and error
          return;
        }
      } catch (err) {
        /* keep trying: the next tick may succeed */
      }
      window.setTimeout(tick, JOB_EVERY);
    }
    if (ACTIVE.includes(body.dataset.status)) window.setTimeout(tick, JOB_EVERY);
  }

  function confirmForms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const body = document.body;
    localizeTimes(document);
    confirmForms();
    if (body.dataset.page === "jobs") followList(body);
    if (body.dataset.page === "job") followJob(body);
  });
})();
