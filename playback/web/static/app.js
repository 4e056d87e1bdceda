// sshward playback web UI. Plain script, no framework, no inline code (the
// page's Content-Security-Policy forbids it). Everything shown comes from the
// playback API (/api/...) with the HttpOnly session cookie that /api/login
// sets; text from recordings and metadata is only ever assigned to
// textContent, never parsed as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  // ---- API -----------------------------------------------------------------

  class APIError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // api fetches path and returns the decoded JSON (or the raw text when
  // raw is set). 401 and 403 surface as APIError with their status.
  async function api(path, { method = "GET", body, raw = false } = {}) {
    const opts = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const resp = await fetch(path, opts);
    const text = await resp.text();
    if (!resp.ok) {
      let msg = `the server answered ${resp.status}`;
      try {
        const e = JSON.parse(text);
        if (e && e.message) msg = e.message;
      } catch (_) { /* not JSON */ }
      throw new APIError(resp.status, msg);
    }
    if (raw) return text;
    return text ? JSON.parse(text) : {};
  }

  // ---- shared page parts ---------------------------------------------------

  function show(id, on) { $(id).hidden = !on; }

  function status(text) {
    const el = $("status");
    el.textContent = text || "";
    el.hidden = !text;
  }

  function setWho() {
    const who = sessionStorage.getItem("sshward.user");
    $("who").textContent = who ? `signed in as ${who}` : "";
    $("logout").hidden = !who;
  }

  // handleAuth shows the login form (401) or the refusal (403) and reports
  // whether err was one of those.
  function handleAuth(err, sections, retry) {
    if (!(err instanceof APIError)) return false;
    if (err.status === 401) {
      sessionStorage.removeItem("sshward.user");
      setWho();
      sections.forEach((s) => show(s, false));
      show("refused", false);
      showLogin(retry);
      return true;
    }
    if (err.status === 403) {
      sections.forEach((s) => show(s, false));
      show("login", false);
      $("refused-text").textContent =
        "Your account may not view recorded sessions: only auditors can list or replay them.";
      show("refused", true);
      status("");
      return true;
    }
    return false;
  }

  let loginRetry = null;

  function showLogin(retry) {
    loginRetry = retry;
    status("");
    show("login", true);
    $("login-user").focus();
  }

  function initLogin() {
    $("login").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const err = $("login-error");
      err.hidden = true;
      $("login-submit").disabled = true;
      try {
        const res = await api("/api/login", {
          method: "POST",
          body: { user: $("login-user").value, password: $("login-password").value, otp: $("login-otp").value },
        });
        $("login-password").value = "";
        $("login-otp").value = "";
        sessionStorage.setItem("sshward.user", res.user || $("login-user").value);
        setWho();
        show("login", false);
        if (loginRetry) loginRetry();
      } catch (e) {
        err.textContent = e instanceof APIError && e.status === 401
          ? "Wrong user, password or one-time code."
          : `Sign-in failed: ${e.message}`;
        err.hidden = false;
      } finally {
        $("login-submit").disabled = false;
      }
    });
    $("logout").addEventListener("click", async () => {
      try { await api("/api/logout", { method: "POST" }); } catch (_) { /* signed out anyway */ }
      sessionStorage.removeItem("sshward.user");
      window.location.assign("/");
    });
    setWho();
  }

  // ---- formatting ----------------------------------------------------------

  const pad = (n, w = 2) => String(n).padStart(w, "0");

  function fmtTime(iso) {
    if (!iso || iso.startsWith("0001-")) return "";
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  // fmtOffset renders seconds into the recording as m:ss.t or h:mm:ss.
  function fmtOffset(sec) {
    sec = Math.max(0, Number(sec) || 0);
    const h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60), s = sec % 60;
    if (h > 0) return `${h}:${pad(m)}:${pad(Math.floor(s))}`;
    return `${m}:${pad(Math.floor(s))}.${Math.floor((s % 1) * 10)}`;
  }

  function fmtDuration(s) {
    if (s.live) return "";
    if (!s.end || !s.start || s.end.startsWith("0001-")) return "";
    const sec = (new Date(s.end) - new Date(s.start)) / 1000;
    if (!(sec >= 0)) return "";
    const h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60), r = Math.round(sec % 60);
    return h > 0 ? `${h}h${pad(m)}m` : m > 0 ? `${m}m${pad(r)}s` : `${r}s`;
  }

  function el(tag, props = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }

  function badge(text, cls) { return el("span", { class: `badge ${cls}`, text }); }

  // highlight returns text as nodes with every case-insensitive occurrence of
  // q wrapped in <mark>.
  function highlight(text, q) {
    const frag = document.createDocumentFragment();
    if (!q) {
      frag.append(text);
      return frag;
    }
    const lower = text.toLowerCase(), lq = q.toLowerCase();
    let i = 0;
    for (;;) {
      const j = lower.indexOf(lq, i);
      if (j < 0) break;
      frag.append(text.slice(i, j), el("mark", { text: text.slice(j, j + q.length) }));
      i = j + q.length;
    }
    frag.append(text.slice(i));
    return frag;
  }

  // printable drops terminal control sequences from a search hit so the list
  // shows what a reader would have seen.
  function printable(s) {
    return String(s || "")
      .replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]/g, "")
      .replace(/\x1b\][^\x07\x1b]*(\x07|\x1b\\)/g, "")
      .replace(/[\x00-\x08\x0b-\x1f\x7f]/g, "");
  }

  function sessionHref(id, hit, q) {
    const u = new URLSearchParams();
    if (hit) u.set("t", String(hit.time));
    if (q) u.set("q", q);
    const qs = u.toString();
    return `/session/${encodeURIComponent(id)}${qs ? "?" + qs : ""}`;
  }

  // ---- session list (/) ----------------------------------------------------

  const FILTERS = ["q", "user", "host", "tier", "since"];
  const FLAGS = [["break_glass", "f-break-glass"], ["live", "f-live"], ["flagged", "f-flagged"]];

  function filtersFromURL() {
    const p = new URLSearchParams(window.location.search);
    for (const f of FILTERS) $(`f-${f}`).value = p.get(f) || "";
    for (const [f, id] of FLAGS) $(id).checked = p.get(f) === "1";
  }

  function filterQuery() {
    const p = new URLSearchParams();
    for (const f of FILTERS) {
      const v = $(`f-${f}`).value.trim();
      if (v) p.set(f, v);
    }
    for (const [f, id] of FLAGS) if ($(id).checked) p.set(f, "1");
    return p;
  }

  // The list shows a page of sessions (the server's 100, newest first)
  // and says when more match: "Showing 100 of 2,345 sessions" with a button
  // that appends the next page (the server's next_cursor).
  let listPage = null; // {p, q, next, shown, total} of the list shown

  async function loadList() {
    const p = filterQuery();
    const q = p.get("q") || "";
    status("Loading sessions…");
    let res;
    try {
      const pc = new URLSearchParams(p);
      pc.set("count", "1");
      res = await api(`/api/sessions?${pc}`);
    } catch (e) {
      if (!handleAuth(e, ["sessions"], loadList)) status(`Could not load sessions: ${e.message}`);
      return;
    }
    status("");
    show("sessions", true);
    $("rows").replaceChildren();
    const list = res.sessions || [];
    show("empty", list.length === 0);
    appendRows(list, q);
    listPage = { p, q, next: res.next_cursor || "", shown: list.length, total: res.total, pages: 1 };
    renderMore();
  }

  function renderMore() {
    const lp = listPage;
    show("more", !!(lp && lp.next));
    if (!lp || !lp.next) return;
    const total = Number.isFinite(lp.total) ? ` of ${lp.total.toLocaleString("en-US")}` : "";
    $("more-text").textContent = `Showing ${lp.shown.toLocaleString("en-US")}${total} sessions.`;
  }

  async function loadMore() {
    const lp = listPage;
    if (!lp || !lp.next) return;
    $("more-button").disabled = true;
    try {
      const pc = new URLSearchParams(lp.p);
      pc.set("cursor", lp.next);
      const res = await api(`/api/sessions?${pc}`);
      if (listPage !== lp) return; // the filters changed meanwhile
      const list = res.sessions || [];
      appendRows(list, lp.q);
      lp.shown += list.length;
      lp.pages++;
      lp.next = res.next_cursor || "";
      renderMore();
    } catch (e) {
      if (!handleAuth(e, ["sessions"], loadList)) status(`Could not load more sessions: ${e.message}`);
    } finally {
      $("more-button").disabled = false;
    }
  }

  function appendRows(list, q) {
    const rows = $("rows");
    for (const s of list) {
      const link = el("a", { href: sessionHref(s.id, null, q), text: fmtTime(s.start) || s.id });
      const tier = el("td", { text: s.tier || "" });
      // Flag break-glass access even when the tier has another name.
      if (s.break_glass && s.tier !== "break-glass") tier.append(badge("break-glass", "bg"));
      if (s.break_glass && s.tier === "break-glass") tier.className = "bg-tier";
      const dur = el("td", { text: fmtDuration(s) });
      if (s.live) dur.append(badge("live", "live"));
      const cmd = el("td", { class: "cmd", text: s.command || s.kind || "" });
      // Suspicious-activity flags (issue 13): the rules the session raised.
      if (s.flags && s.flags.length) cmd.append(badge(`flagged: ${s.flags.join(", ")}`, "flag"));
      const integ = s.integrity || "";
      const tr = el("tr", { class: "session-row", "data-id": s.id },
        el("td", {}, link),
        el("td", { text: s.user || "" }),
        el("td", { text: s.host || "" }),
        tier, dur,
        cmd,
        el("td", { class: `integrity-${integ}`, text: integ }));
      rows.append(tr);
      const hits = s.hits || [];
      if (hits.length > 0) {
        const ul = el("ul", { class: "hits" });
        for (const h of hits.slice(0, 10)) {
          const a = el("a", { class: "hit", href: sessionHref(s.id, h, q) },
            el("span", { class: "t", text: fmtOffset(h.time) }), highlight(printable(h.text), q));
          ul.append(el("li", {}, a));
        }
        rows.append(el("tr", { class: "hits" }, el("td", { colspan: "7" }, ul)));
      }
    }
  }

  function initIndex() {
    filtersFromURL();
    $("more-button").addEventListener("click", loadMore);
    $("filters").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const qs = filterQuery().toString();
      history.replaceState(null, "", qs ? `/?${qs}` : "/");
      loadList();
    });
    loadList();
    // Live sessions change while one looks: refresh a list that shows any.
    setInterval(() => {
      // (Not once the reader has asked for more pages: they would go.)
      if (listPage && listPage.pages > 1) return;
      if (!$("sessions").hidden && document.querySelector(".badge.live")) loadList();
    }, 10000);
  }

  // ---- session page (/session/{id}) ---------------------------------------

  // The bits of the cast the page needs to find positions without parsing a
  // whole (possibly 100 MB) recording twice: the time of a cast line.
  function lineTime(line) {
    try {
      const e = JSON.parse(line);
      return Array.isArray(e) ? Number(e[0]) : 0;
    } catch (_) {
      return NaN;
    }
  }

  // streamCast reads a cast progressively. onChunk(state) runs after each
  // network read with state = {parts (whole lines only), bytes (their
  // length), lastTime (of the last whole line), events (any line after the
  // header), done}; when it returns a promise, reading waits for it (so the
  // player gets the main thread for its first frame). Reading in pieces lets
  // the player start long before a large recording has arrived, and follows
  // a live session as it grows.
  //
  // A live stream also ends when the connection is lost (the server
  // restarted): with follow set, streamCast asks follow.ended(offset)
  // whether the session is over and every byte arrived; if not, it calls
  // follow.onLost(err), reconnects with ?offset= (the bytes it has; an older
  // server that ignores it sends from the start, and the bytes it has are
  // skipped), calls follow.onResumed() and reads on: no byte twice, none
  // missing.
  async function streamCast(url, onChunk, follow) {
    const open = async (offset) => {
      const u = offset > 0 ? `${url}${url.includes("?") ? "&" : "?"}offset=${offset}` : url;
      const resp = await fetch(u, { credentials: "same-origin" });
      if (!resp.ok) {
        let msg = `the server answered ${resp.status}`;
        try { msg = JSON.parse(await resp.text()).message || msg; } catch (_) { /* keep */ }
        throw new APIError(resp.status, msg);
      }
      const honoured = resp.headers.get("X-Sshward-Offset") === String(offset);
      return { reader: resp.body.getReader(), skip: offset > 0 && !honoured ? offset : 0 };
    };
    performance.mark("sshward:cast-request");
    let cur = await open(0);
    performance.mark("sshward:cast-response");
    const dec = new TextDecoder();
    const parts = [];
    let tail = ""; // bytes after the last newline, not yet a whole line
    let lastTime = 0;
    let events = false;
    let bytes = 0;
    let offset = 0; // bytes received: where a reconnect resumes
    for (;;) {
      let lost = null;
      try {
        for (;;) {
          let { done, value } = await cur.reader.read();
          if (done) break;
          if (cur.skip > 0) {
            const k = Math.min(cur.skip, value.length);
            cur.skip -= k;
            value = value.subarray(k);
            if (value.length === 0) continue;
          }
          offset += value.length;
          const s = tail + dec.decode(value, { stream: true });
          const cut = s.lastIndexOf("\n");
          if (cut < 0) {
            tail = s;
            continue;
          }
          const whole = s.slice(0, cut + 1);
          tail = s.slice(cut + 1);
          parts.push(whole);
          bytes += whole.length;
          // The header is the first line; the player needs an event too.
          events = events || parts.length > 1 || whole.indexOf("\n") < whole.length - 1;
          const prev = whole.lastIndexOf("\n", whole.length - 2);
          const t = lineTime(whole.slice(prev + 1, whole.length - 1));
          if (!isNaN(t)) lastTime = t;
          const wait = onChunk({ parts, bytes, lastTime, events, done: false });
          if (wait) await wait;
        }
      } catch (e) {
        lost = e;
      }
      if (!follow) {
        if (lost) throw lost;
        break;
      }
      if (!lost && await follow.ended(offset)) break;
      follow.onLost(lost);
      for (let wait = 250; ; wait = Math.min(2 * wait, 5000)) {
        await new Promise((r) => setTimeout(r, wait));
        try {
          cur = await open(offset);
          break;
        } catch (e) {
          // A refusal ends the follow; a server still away is tried again.
          if (e instanceof APIError && e.status < 500) throw e;
        }
      }
      follow.onResumed();
    }
    tail += dec.decode();
    if (tail.trim() !== "") {
      parts.push(tail + "\n");
      bytes += tail.length + 1;
      events = events || parts.length > 1;
      const t = lineTime(tail);
      if (!isNaN(t)) lastTime = t;
    }
    onChunk({ parts, bytes, lastTime, events, done: true });
  }

  // leadIn is how long before a search hit or marker playback starts.
  const leadIn = 1;

  // Player wraps asciinema-player: it re-creates the player when more of the
  // recording arrives, keeping the position and whether it was playing.
  class Player {
    constructor(container) {
      this.container = container;
      this.player = null;
      this.markers = [];
      this.speed = 1;
      this.idle = undefined;
      this.text = "";
      this.playing = false;
      this.onEnded = null; // called when playback reaches the end of text
    }

    // render shows text; the promise it returns settles once the player
    // has drawn text (or after a second at most). until, for a part of the
    // recording, is the time of its last event: later markers would make
    // the player wait in silence for events that have not arrived.
    render(text, { startAt, autoPlay, until }) {
      if (!/\n./.test(text)) {
        status("This recording has no output.");
        return Promise.resolve();
      }
      this.text = text;
      if (this.player) {
        try { this.player.dispose(); } catch (_) { /* already gone */ }
      }
      this.container.replaceChildren();
      const opts = { autoPlay, fit: "width", speed: this.speed, controls: true };
      if (startAt > 0) opts.startAt = startAt;
      if (this.idle) opts.idleTimeLimit = this.idle;
      const markers = Number.isFinite(until) ? this.markers.filter((m) => m[0] <= until) : this.markers;
      if (markers.length > 0) opts.markers = markers;
      const p = window.AsciinemaPlayer.create({ data: text }, this.container, opts);
      this.player = p;
      this.playing = autoPlay;
      this.ended = false;
      let started;
      const ready = new Promise((resolve) => {
        started = resolve;
        const t0 = performance.now();
        const drawn = () => {
          if (this.hasText() || performance.now() - t0 > 1000) {
            performance.mark("sshward:drawn");
            resolve();
            return;
          }
          requestAnimationFrame(drawn);
        };
        requestAnimationFrame(drawn);
      });
      p.addEventListener("play", () => { this.playing = true; });
      p.addEventListener("playing", () => {
        this.playing = true;
        performance.mark("sshward:playing");
      });
      p.addEventListener("pause", () => { this.playing = false; });
      p.addEventListener("ended", () => {
        this.ended = true;
        started();
        if (this.player === p && this.onEnded) this.onEnded();
      });
      return ready;
    }

    // hasText reports whether the terminal shows any text yet
    // (asciinema-player 3.17 draws rows as pre.ap-term-text > span.ap-line).
    hasText() {
      for (const row of this.container.querySelectorAll("pre.ap-term-text > span.ap-line")) {
        if (row.textContent.trim() !== "") return true;
      }
      return false;
    }

    currentTime() {
      try { return this.player ? this.player.getCurrentTime() || 0 : 0; } catch (_) { return 0; }
    }

    // seek plays from a second before t, so the moment plays in (and a
    // marker at the very end is not a position the player restarts from).
    seek(t) {
      if (!this.player) return;
      const p = this.player;
      p.seek(Math.max(0, t - leadIn)).then(() => p.play());
    }

    // rerender keeps the viewer's place after an option change.
    rerender() {
      if (this.text) this.render(this.text, { startAt: this.currentTime(), autoPlay: this.playing });
    }
  }

  // firstChunkBytes is how much of a recording the player gets before the
  // rest has arrived: many screens, small enough to parse in a few
  // milliseconds. When the player reaches the end of it, it gets what has
  // arrived by then; once everything is in, the whole recording.
  const firstChunkBytes = 64 << 10;

  function metaRow(dl, label, value, cls) {
    if (value === undefined || value === null || value === "") return;
    dl.append(el("dt", { text: label }), el("dd", { class: cls || "", text: String(value) }));
  }

  // serialFrom reads the certificate serial from the raw JSON: it is a
  // 64-bit integer, which a JavaScript number would round.
  function serialFrom(raw) {
    const m = /"serial"\s*:\s*(\d+)/.exec(raw);
    return m ? m[1] : "";
  }

  function renderMeta(d, raw) {
    const m = d.metadata || {};
    const dl = $("meta");
    dl.replaceChildren();
    const integ = d.integrity || "";
    metaRow(dl, "Integrity", integ + (d.digest_ok === false ? " (digest mismatch)" : "") +
      (d.signature_ok === false ? " (signature invalid)" : ""), `integrity-${integ}`);
    metaRow(dl, "Digest", d.digest_ok === undefined ? "" : d.digest_ok ? "sha256 matches" : "does not match");
    metaRow(dl, "Host signature", d.signature_ok === undefined ? "" : d.signature_ok ? "valid" : "invalid");
    metaRow(dl, "Signed by", d.host_cert_key_id);
    metaRow(dl, "Uploaded by", d.uploaded_by);
    // Each provenance check (host, tier, user certificate): a failed one is
    // shown as failed, an unproven one as unproven, never as verified.
    for (const c of d.provenance || []) {
      const cls = c.status === "ok" ? "integrity-verified" : c.status === "failed" ? "integrity-failed" : "";
      metaRow(dl, "Provenance: " + c.name, c.status + " — " + c.detail, cls);
    }
    metaRow(dl, "User", d.user || m.identity);
    metaRow(dl, "Principal", d.principal || m.principal);
    metaRow(dl, "Host", d.host || m.host);
    metaRow(dl, "Client address", m.client_addr);
    metaRow(dl, "Tier", d.tier || m.tier);
    metaRow(dl, "Certificate key id", m.key_id);
    metaRow(dl, "Certificate serial", serialFrom(raw));
    metaRow(dl, "Request id", d.request_id || m.request_id);
    metaRow(dl, "Reason", d.reason || m.reason);
    const approvers = d.approvers || m.approvers || [];
    metaRow(dl, "Approvers", approvers.join(", "));
    metaRow(dl, "Kind", d.kind || m.kind);
    metaRow(dl, "Command", d.command || m.command);
    metaRow(dl, "Input recorded", m.record_input ? "yes" : "no");
    metaRow(dl, "Start", fmtTime(d.start || m.start));
    metaRow(dl, "End", d.live ? "still running" : fmtTime(d.end || m.end));
    let exit = "";
    if (m.exit_status !== undefined && m.exit_status !== null) exit = `status ${m.exit_status}`;
    if (m.exit_signal) exit = `signal ${m.exit_signal}`;
    if (m.end_reason) exit += `${exit ? ", " : ""}${m.end_reason}`;
    metaRow(dl, "Exit", exit);
    metaRow(dl, "Bytes", d.bytes !== undefined ? d.bytes : m.bytes_out);
    // Binary output kept beside the cast (side blob), its signed digest, and
    // the tier's cut when bulk_output kept only part of it.
    if (m.blob) {
      let b = `${m.blob.bytes} bytes in the blob, sha256 ${m.blob.sha256}`;
      if (m.blob.cut) b += `; cut by the tier: ${m.blob.stream_bytes} bytes sent, sha256 of all ${m.blob.stream_sha256 || "unknown"}`;
      metaRow(dl, "Binary output", b);
    }
    if (m.incomplete || d.complete === false) metaRow(dl, "Incomplete", m.incomplete || "yes", "integrity-failed");
    metaRow(dl, "Session id", d.id || m.session_id);
    const who = d.user || m.identity || "";
    const host = d.host || m.host || "";
    $("title").textContent = `${who}@${host}`;
    if (d.break_glass) $("title").append(badge("break-glass", "bg"));
    if (d.live) $("title").append(badge("live", "live"));
    document.title = `${who}@${host} · sshward playback`;
  }

  function renderMarkers(list, player) {
    const ol = $("markers");
    ol.replaceChildren();
    for (const mk of list) {
      const b = el("button", { type: "button" }, el("span", { class: "t", text: fmtOffset(mk.time) }), mk.label);
      b.addEventListener("click", () => player.seek(mk.time));
      ol.append(el("li", { class: mk.hit ? "hit" : mk.label.startsWith("flag ") ? "flag" : "" }, b));
    }
  }

  async function loadSession(id) {
    const params = new URLSearchParams(window.location.search);
    const q = params.get("q") || "";
    const hitTime = Number(params.get("t"));
    status("Loading session…");
    let d, raw;
    try {
      raw = await api(`/api/sessions/${encodeURIComponent(id)}`, { raw: true });
      d = JSON.parse(raw);
    } catch (e) {
      if (!handleAuth(e, ["session"], () => loadSession(id))) {
        status(e instanceof APIError && e.status === 404 ? "No such session." : `Could not load the session: ${e.message}`);
      }
      return;
    }
    status("");
    show("session", true);
    renderMeta(d, raw);
    $("export").href = `/api/sessions/${encodeURIComponent(id)}/export`;

    // Markers: the server's session events plus the search hits for q in
    // this session, so the viewer can step from hit to hit.
    const markers = (d.markers || []).map((m) => ({ time: Number(m.time), label: m.label }));
    if (q) {
      try {
        const res = await api(`/api/search?${new URLSearchParams({ q, limit: "200" })}`);
        for (const h of res.hits || []) {
          if (h.session_id === id) markers.push({ time: Number(h.time), label: `“${q}”: ${printable(h.text)}`, hit: true });
        }
      } catch (_) { /* markers are a convenience */ }
    }
    markers.sort((a, b) => a.time - b.time);

    const player = new Player($("player"));
    player.markers = markers.map((m) => [m.time, m.label]);
    renderMarkers(markers, player);
    loadCommands(id, player);
    const sp = Number(params.get("speed"));
    if (sp > 0) { player.speed = sp; $("speed").value = String(sp); }
    const idle = Number(params.get("idle"));
    if (idle > 0) { player.idle = idle; $("idle").value = String(idle); }
    $("speed").addEventListener("change", () => { player.speed = Number($("speed").value) || 1; player.rerender(); });
    $("idle").addEventListener("change", () => { player.idle = Number($("idle").value) || undefined; player.rerender(); });

    // A search hit starts a second early so the moment plays in.
    const startAt = hitTime > 0 ? Math.max(0, hitTime - leadIn) : 0;
    const live = !!d.live;
    show("follow-label", live);
    initTerminate(id, live);
    const castURL = `/api/sessions/${encodeURIComponent(id)}/cast${live ? "?follow=1" : ""}`;

    let shown = 0;           // number of parts the player has
    let lastRender = 0;      // performance.now() of the last live re-render
    let pending = null;      // the newest state read (live)
    let timer = null;        // a scheduled live re-render
    const follow = () => live && $("follow").checked;
    let renderCost = 0;      // ms the last live re-render took
    const renderLive = (st) => {
      shown = st.parts.length;
      lastRender = performance.now();
      // Following shows the latest screen: start at the newest event.
      player.render(st.parts.join(""), { startAt: st.lastTime, autoPlay: true, until: st.lastTime });
      renderCost = performance.now() - lastRender;
    };
    $("follow").addEventListener("change", () => {
      if (follow() && pending && pending.parts.length !== shown) renderLive(pending);
    });

    // A partial recording that played to its end continues with more of
    // what has arrived since: up to four times as much (at least 4 MB), so
    // that a slow download does not make the player parse it all twice.
    let shownBytes = 0;
    player.onEnded = () => {
      if (live || !pending || pending.done || pending.parts.length === shown) return;
      const limit = Math.max(4 << 20, 4 * shownBytes);
      let n = shown, bytes = shownBytes;
      while (n < pending.parts.length && bytes < limit) bytes += pending.parts[n++].length;
      shown = n;
      shownBytes = bytes;
      const last = pending.parts[n - 1];
      const until = lineTime(last.slice(last.lastIndexOf("\n", last.length - 2) + 1, last.length - 1));
      player.render(pending.parts.slice(0, n).join(""), { startAt: player.currentTime(), autoPlay: true, until });
    };

    const onChunk = (st) => {
      pending = st;
      if (shown === 0) {
        // First frame: as soon as there is a screenful past startAt (a live
        // session: any event), or all of it.
        if (!st.done && !st.events) return null;
        if (!st.done && !live && (st.bytes < firstChunkBytes || st.lastTime < startAt)) return null;
        shown = st.parts.length;
        shownBytes = st.bytes;
        lastRender = performance.now();
        if (st.done) status("");
        else status(live ? "Following the live session…" : "Loading the rest of the recording…");
        // Reading waits until the player has drawn: it needs the main
        // thread more than the download does. The marks let `make bench`
        // say where the time to the first frame goes.
        performance.mark("sshward:first-render");
        return player.render(st.parts.join(""), {
          startAt: follow() ? st.lastTime : startAt, autoPlay: true, until: st.done ? undefined : st.lastTime,
        });
      }
      if (st.done) {
        if (st.parts.length === shown && !live) {
          status("");
          return null;
        }
        const wasAt = player.currentTime();
        const play = player.playing || player.ended;
        shown = st.parts.length;
        if (follow()) player.render(st.parts.join(""), { startAt: st.lastTime, autoPlay: true });
        else player.render(st.parts.join(""), { startAt: wasAt, autoPlay: play });
        status(live ? "The session has ended." : "");
        return null;
      }
      if (follow() && !timer) {
        // Re-render as soon as the last render allows: a few times its own
        // cost apart (at least 100 ms), so that a new line shows within a
        // fraction of a second and a chatty session stays watchable.
        const wait = Math.max(0, lastRender + Math.max(100, 3 * renderCost) - performance.now());
        timer = setTimeout(() => {
          timer = null;
          if (follow() && pending && pending.parts.length !== shown) renderLive(pending);
        }, wait);
      }
      return null;
    };
    // Following: a lost connection is said and repaired, never taken for
    // the end of the session.
    const followLive = live ? {
      ended: async (have) => {
        try {
          const d2 = await api(`/api/sessions/${encodeURIComponent(id)}`);
          return !d2.live && have >= (d2.bytes || 0);
        } catch (_) {
          return false; // the server cannot say: reconnecting finds out
        }
      },
      onLost: () => {
        status("Connection to the playback server lost — reconnecting…");
      },
      onResumed: () => {
        status("Reconnected — following the live session…");
      },
    } : null;
    try {
      await streamCast(castURL, onChunk, followLive);
      if (live) {
        // The stream ends when the session does: show the final metadata
        // (end, exit status, integrity).
        try {
          const raw2 = await api(`/api/sessions/${encodeURIComponent(id)}`, { raw: true });
          renderMeta(JSON.parse(raw2), raw2);
          show("follow-label", false);
          $("terminate-submit").disabled = true;
          loadCommands(id, player);
        } catch (_) { /* keep what is shown */ }
      }
    } catch (e) {
      if (!handleAuth(e, ["session"], () => loadSession(id))) status(`Could not load the recording: ${e.message}`);
    }
  }

  // The command timeline (issue 13 §3): what was run, when, with the exit
  // status where known; each entry jumps the player to its moment.
  async function loadCommands(id, player) {
    let r;
    try {
      r = await api(`/api/sessions/${encodeURIComponent(id)}/commands`);
    } catch (_) {
      return; // a convenience: the recording plays without it
    }
    const ol = $("commands");
    ol.replaceChildren();
    for (const c of r.commands || []) {
      let label = c.command;
      if (c.exit_status !== undefined && c.exit_status !== null) label += ` (exit ${c.exit_status})`;
      if (c.source === "prompt") label += " (from the prompt)";
      const b = el("button", { type: "button" }, el("span", { class: "t", text: fmtOffset(c.time) }), printable(label));
      b.addEventListener("click", () => player.seek(Number(c.time)));
      ol.append(el("li", {}, b));
    }
    if (!ol.children.length) ol.append(el("li", { class: "hint", text: "none found" }));
  }

  // Ending a live session (auditors, as the CA's policy allows): the
  // server relays to the CA, which orders the host's agent; the user reads
  // the reason, the recording and the audit log keep it.
  function initTerminate(id, live) {
    const form = $("terminate");
    show("terminate", live);
    if (!live || form.dataset.ready) return;
    form.dataset.ready = "1";
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const reason = $("terminate-reason").value.trim();
      const out = $("terminate-result");
      out.hidden = false;
      if (!reason) {
        out.textContent = "Say why the session is ended.";
        return;
      }
      $("terminate-submit").disabled = true;
      try {
        const r = await api(`/api/sessions/${encodeURIComponent(id)}/terminate`, {
          method: "POST", body: { reason, lock_user: $("terminate-lock").checked },
        });
        out.textContent = `Terminated by ${r.by}; the host ends it within seconds.` + (r.locked ? " The user is locked." : "");
      } catch (e) {
        out.textContent = `Not terminated: ${e.message}`;
        $("terminate-submit").disabled = false;
      }
    });
  }

  function initSession() {
    const id = decodeURIComponent(window.location.pathname.replace(/^\/session\//, ""));
    if (typeof window.AsciinemaPlayer === "undefined") {
      status("The web player is not built: run make web and restart sshward-playback.");
      return;
    }
    loadSession(id);
  }

  document.addEventListener("DOMContentLoaded", () => {
    initLogin();
    const page = document.body.dataset.page;
    if (page === "index") initIndex();
    else if (page === "session") initSession();
  });
})();
