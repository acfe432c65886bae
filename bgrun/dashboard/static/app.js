// bgrun dashboard: local times, a self-refreshing job list with its chart of finished jobs,
// a job page that follows its job and its progress, and a live list of runners.
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

  function progressParts(report) {
    // A bar (no value: indeterminate, for a report without a total) and its words.
    if (!report) return [];
    const bar = el("progress", { title: report.message || "" });
    let text = String(report.done);
    if (report.total) {
      bar.max = report.total;
      bar.value = report.done;
      text = Math.floor((100 * report.done) / report.total) + "%";
    }
    return [bar, " ", el("span", { className: "ptext", textContent: text })];
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
      el("td", { className: "queue", textContent: job.queue }),
      el("td", { className: "num", textContent: job.attempts + "/" + (job.retries + 1) }),
      el("td", { className: "num", textContent: String(job.priority) }),
      el("td", { className: "progress" }, progressParts(job.progress)),
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

  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (key) {
      node.setAttribute(key, String(attrs[key]));
    });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function hhmm(iso) {
    const date = new Date(iso);
    return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  }

  function drawChart(chart, stats) {
    // One stacked bar per minute: completed at the bottom, failed on top.
    const width = 600, height = 150, left = 34, bottom = 20, top = 8;
    const minutes = stats.per_minute;
    const most = Math.max(1, ...minutes.map(function (m) { return m.completed + m.failed; }));
    const scale = (height - bottom - top) / most;
    const step = (width - left) / minutes.length;
    const nodes = [
      svg("line", { x1: left, y1: height - bottom, x2: width, y2: height - bottom, class: "axis" }),
      svg("text", { x: left - 4, y: top + 8, class: "tick end" }, String(most)),
      svg("text", { x: left - 4, y: height - bottom, class: "tick end" }, "0"),
    ];
    minutes.forEach(function (m, i) {
      const x = left + i * step + 1;
      const bar = svg("g", { class: "minute", "data-minute": m.minute,
                             "data-completed": m.completed, "data-failed": m.failed });
      let y = height - bottom;
      [["completed", m.completed], ["failed", m.failed]].forEach(function ([kind, count]) {
        if (!count) return;
        y -= count * scale;
        bar.append(svg("rect", { x: x, y: y, width: Math.max(1, step - 2),
                                 height: count * scale, class: kind }));
      });
      bar.append(svg("title", {}, hhmm(m.minute) + ": " + m.completed + " completed, " +
                     m.failed + " failed"));
      nodes.push(bar);
      if (i % 15 === 0 || i === minutes.length - 1) {
        nodes.push(svg("text", { x: x, y: height - 5, class: "tick" }, hhmm(m.minute)));
      }
    });
    chart.replaceChildren.apply(chart, nodes);
  }

  function drawQueues(queues) {
    const rows = document.getElementById("queue-rows");
    const names = Object.keys(queues).sort();
    rows.replaceChildren.apply(rows, names.map(function (name) {
      const c = queues[name];
      const tr = el("tr", {}, [el("td", { className: "mono", textContent: name })].concat(
        [c.queued, c.scheduled, c.running].map(function (n) {
          return el("td", { className: "num", textContent: String(n) });
        })));
      tr.dataset.queue = name;
      return tr;
    }));
    document.getElementById("no-queues").hidden = names.length > 0;
  }

  async function refreshStats() {
    const chart = document.getElementById("chart");
    const stats = await getJSON(chart.dataset.statsApi);
    drawChart(chart, stats);
    drawQueues(stats.queues);
  }

  function followList(body) {
    async function tick() {
      if (!document.hidden) {
        try {
          await Promise.all([refreshList(body), refreshStats()]);
        } catch (err) {
          document.getElementById("live").textContent = "not updating: " + err.message;
        }
      }
      window.setTimeout(tick, LIST_EVERY);
    }
    window.setTimeout(tick, LIST_EVERY);
    refreshStats().catch(function (err) {
      document.getElementById("live").textContent = "not updating: " + err.message;
    });
  }

  function runnerRow(runner, jobBase) {
    const job = runner.job;
    const lease = runner.lease_age === null || runner.lease_age === undefined
      ? "-" : runner.lease_age.toFixed(1) + " s";
    const cells = [
      el("td", { className: "mono", textContent: runner.host || "-" }),
      el("td", { className: "num", textContent: String(runner.slot) }),
      el("td", { className: "num", textContent: String(runner.pid) }),
      el("td", { className: "mono", textContent: runner.queues ? runner.queues.join(", ") : "all" }),
      el("td", { className: "num", textContent: lease }),
      el("td", {}, [el("span", { className: "badge " + (job ? "running" : "idle"),
                                 textContent: job ? "busy" : "idle" })]),
    ];
    if (job) {
      const href = jobBase + encodeURIComponent(job.id);
      cells.push(el("td", { className: "name" }, [el("a", { href: href, textContent: job.id + " " + job.target }, [
        el("span", { className: "method", textContent: "." + job.method })])]));
      cells.push(el("td", {}, [el("time", { dateTime: job.since, textContent: job.since })]));
      cells.push(el("td", { className: "progress" }, progressParts(job.progress)));
    } else {
      cells.push(el("td", {}, [el("span", { className: "none", textContent: "-" })]));
      cells.push(el("td", {}, [el("span", { className: "none", textContent: "since " }),
        el("time", { dateTime: runner.started_at, textContent: runner.started_at })]));
      cells.push(el("td", { className: "progress" }));
    }
    const tr = el("tr", {}, cells);
    tr.dataset.pid = String(runner.pid);
    return tr;
  }

  function followRunners(body) {
    async function tick() {
      if (!document.hidden) {
        try {
          const runners = await getJSON(body.dataset.api);
          const rows = document.getElementById("runner-rows");
          rows.replaceChildren.apply(rows, runners.map(function (r) {
            return runnerRow(r, body.dataset.jobBase);
          }));
          localizeTimes(rows);
          document.getElementById("empty").hidden = runners.length > 0;
          document.getElementById("live").textContent = "updated " + new Date().toLocaleTimeString();
        } catch (err) {
          document.getElementById("live").textContent = "not updating: " + err.message;
        }
      }
      window.setTimeout(tick, LIST_EVERY);
    }
    window.setTimeout(tick, LIST_EVERY);
  }

  function showProgress(report) {
    const box = document.getElementById("progress-box");
    if (!report) return;
    box.hidden = false;
    const bar = document.getElementById("progress-bar");
    let text = String(report.done);
    if (report.total !== null) text += " / " + report.total;
    if (report.total) {
      bar.max = report.total;
      bar.value = report.done;
      text += " (" + Math.floor((100 * report.done) / report.total) + "%)";
    } else {
      bar.removeAttribute("value"); // indeterminate: no total to measure against
    }
    document.getElementById("progress-text").textContent = text;
    document.getElementById("progress-message").textContent = report.message || "";
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
        showProgress(job.progress);
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
    if (body.dataset.page === "runners") followRunners(body);
  });
})();
