/*! cdp.js: the storefront SDK of this CDP (docs/sdk.md). No dependencies, no eval. */
(function (window, document) {
  "use strict";
  if (window.cdp && window.cdp.init) return; // loaded twice

  var VERSION = "1.0.0";
  var YEAR = 31536000; // seconds
  var MAX_QUEUE = 1000; // messages kept while the server cannot be reached
  var MAX_BODY = 450000; // bytes per fetch (the server takes 500 KB)
  var MAX_BEACON = 50000; // bytes per beacon (browsers allow 64 KB in flight)
  var DEFAULTS = {
    writeKey: "",
    host: "",
    consent: "opt-out",
    policyVersion: "1",
    autoPage: true,
    scroll: true,
    dwell: true,
    clicks: true,
    decide: false,
    flushInterval: 1000,
    batchSize: 20
  };
  var ls = {
    get: function (k) {
      try { return window.localStorage.getItem(k); } catch (e) { return null; }
    },
    set: function (k, v) {
      try {
        if (v === null) window.localStorage.removeItem(k);
        else window.localStorage.setItem(k, v);
      } catch (e) { /* private mode or full: the page still works */ }
    }
  };

  var cfg = null; // set by init()
  var early = []; // messages made before init()
  var queue = []; // allowed to send, not yet acknowledged (mirrored in localStorage)
  var held = []; // opt-in mode, before a choice: kept in memory only
  var sending = {}; // messageId → true while its request is in flight
  var done = {}; // messageIds the server acknowledged (other tabs share the stored queue)
  var ids = {}; // aid, uid, hash: what is persisted once consent allows
  var timer = null;
  var attempts = 0;
  var busy = null;
  var scrolled = {};

  // --- small helpers -------------------------------------------------------------------

  function iso() { return new Date().toISOString(); }

  function uuid() {
    var c = window.crypto;
    if (c.randomUUID) return c.randomUUID();
    var b = c.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
    return [h.slice(0, 8), h.slice(8, 12), h.slice(12, 16), h.slice(16, 20), h.slice(20)].join("-");
  }

  function parse(text) {
    try { return JSON.parse(text); } catch (e) { return null; }
  }

  function cookie(name, value, maxAge) {
    if (value === undefined) {
      var m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
      return m ? decodeURIComponent(m[1]) : null;
    }
    document.cookie = name + "=" + encodeURIComponent(value) + "; Max-Age=" + maxAge +
      "; Path=/; SameSite=Lax" + (window.location.protocol === "https:" ? "; Secure" : "");
  }

  function warn(text) {
    if (window.console) window.console.warn("cdp.js: " + text);
  }

  function emit(target, name, detail) {
    target.dispatchEvent(new CustomEvent(name, { bubbles: true, detail: detail }));
  }

  // --- consent ---------------------------------------------------------------------------

  function choice() {
    var c = parse(cookie("cdp_consent"));
    return c && typeof c === "object" ? c : null;
  }

  // A purpose the visitor chose decides; personalization follows analytics when not
  // chosen separately; with no choice at all, the mode decides.
  function allowed(purpose) {
    var c = choice();
    var v = c ? (purpose in c ? c[purpose] : c.analytics) : undefined;
    if (v === undefined || v === null) return !cfg || cfg.consent !== "opt-in";
    return v === true;
  }

  // In opt-in mode a decision request names the visitor too: it waits for analytics.
  function mayDecide() {
    return allowed("personalization") && (cfg.consent !== "opt-in" || allowed("analytics"));
  }

  function mayStore() { return !!cfg && (allowed("analytics") || mayDecide()); }

  // --- identity --------------------------------------------------------------------------

  function persistIds() {
    ids.saved = mayStore();
    if (!ids.saved) return;
    cookie("cdp_aid", ids.aid, YEAR);
    ls.set("cdp_aid", ids.aid);
    ls.set("cdp_uid", ids.uid || null);
    ls.set("cdp_uhash", ids.hash || null);
  }

  function anonymousId(id) {
    if (id) {
      ids.aid = String(id);
      ids.saved = false;
    }
    if (!ids.aid) ids.aid = cookie("cdp_aid") || ls.get("cdp_aid") || uuid();
    if (!ids.saved) persistIds();
    return ids.aid;
  }

  function loadIds() {
    ids.uid = ls.get("cdp_uid");
    ids.hash = ls.get("cdp_uhash");
  }

  // --- messages and the queue ---------------------------------------------------------------

  function pageInfo() {
    var l = window.location;
    return { path: l.pathname, url: l.href, title: document.title, referrer: document.referrer, search: l.search };
  }

  function message(type, fields) {
    var m = {
      type: type,
      anonymousId: anonymousId(),
      messageId: uuid(),
      timestamp: iso(),
      context: {
        page: pageInfo(),
        userAgent: window.navigator.userAgent,
        locale: window.navigator.language,
        library: { name: "cdp.js", version: VERSION }
      }
    };
    if (ids.uid) m.userId = ids.uid;
    if (ids.uid && ids.hash) m.userHash = ids.hash;
    for (var k in fields) if (fields[k] !== undefined) m[k] = fields[k];
    enqueue(m);
    return m.messageId;
  }

  function save() {
    if (!mayStore()) return;
    var mine = {};
    queue.forEach(function (m) { mine[m.messageId] = true; });
    var stored = (parse(ls.get("cdp_queue")) || []).filter(function (m) {
      return m && m.messageId && !mine[m.messageId] && !done[m.messageId];
    });
    var all = stored.concat(queue).slice(-MAX_QUEUE);
    ls.set("cdp_queue", all.length ? JSON.stringify(all) : null);
  }

  function enqueue(m) {
    if (!cfg) return early.push(m);
    if (!allowed("analytics")) {
      if (consent.status() === "unknown") held.push(m); // opt-in, no choice yet
      return; // denied: dropped
    }
    queue.push(m);
    if (queue.length > MAX_QUEUE) queue.shift();
    save();
    if (attempts) return; // the scheduled retry takes these too
    if (queue.length >= cfg.batchSize) flush();
    else schedule(cfg.flushInterval);
  }

  function schedule(ms, replace) {
    if (replace) clearTimeout(timer);
    if (replace || !timer) timer = setTimeout(function () { timer = null; flush(); }, ms);
  }

  function acknowledge(batch) {
    var gone = {};
    batch.forEach(function (m) { gone[m.messageId] = done[m.messageId] = true; delete sending[m.messageId]; });
    queue = queue.filter(function (m) { return !gone[m.messageId]; });
    save();
  }

  // The next messages not in flight, within count and byte limits.
  function take(limit, count) {
    var out = [];
    var size = 100;
    for (var i = 0; i < queue.length && out.length < count; i++) {
      var m = queue[i];
      if (sending[m.messageId]) continue;
      size += JSON.stringify(m).length + 1;
      if (out.length && size > limit) break;
      out.push(m);
    }
    return out;
  }

  function body(batch) {
    return JSON.stringify({ batch: batch, sentAt: iso(), writeKey: cfg.writeKey });
  }

  // "ok", "drop" (refused for good: a retry cannot help) or "retry".
  function post(batch) {
    var text = body(batch);
    return window.fetch(cfg.host + "/v1/batch", {
      method: "POST",
      headers: { "Content-Type": "text/plain" }, // a simple request: no CORS preflight
      body: text,
      credentials: "omit",
      keepalive: text.length < 60000
    }).then(function (r) {
      if (r.ok) return "ok";
      if (r.status === 429 || r.status >= 500) {
        var after = parseFloat(r.headers.get("Retry-After"));
        return after > 0 ? after * 1000 : "retry";
      }
      warn("/v1/batch refused " + batch.length + " event(s): HTTP " + r.status);
      return "drop";
    }, function () { return "retry"; });
  }

  function pump() {
    if (!cfg || !allowed("analytics")) return Promise.resolve();
    var batch = take(MAX_BODY, cfg.batchSize);
    if (!batch.length) return Promise.resolve();
    batch.forEach(function (m) { sending[m.messageId] = true; });
    return post(batch).then(function (outcome) {
      if (outcome === "ok" || outcome === "drop") {
        attempts = 0;
        acknowledge(batch);
        return pump();
      }
      // Same messages, same messageIds: the server drops what it already stored.
      batch.forEach(function (m) { delete sending[m.messageId]; });
      attempts++;
      var wait = Math.min(60000, 1000 * Math.pow(2, attempts - 1)) * (0.75 + Math.random() / 2);
      schedule(typeof outcome === "number" ? Math.max(outcome, wait) : wait, true);
    });
  }

  function flush() {
    clearTimeout(timer);
    timer = null;
    if (!busy) busy = pump().then(function () { busy = null; }, function () { busy = null; });
    return busy;
  }

  // The page is going away (or to the background): what is left goes by beacon.
  function beacon() {
    if (!cfg || !allowed("analytics") || !window.navigator.sendBeacon) return;
    for (;;) {
      var batch = take(MAX_BEACON, 500);
      if (!batch.length || !window.navigator.sendBeacon(cfg.host + "/v1/batch", body(batch))) break;
      acknowledge(batch);
    }
  }

  // --- automatic events --------------------------------------------------------------------

  var visibleSince = null;
  var visibleMs = 0;

  function onHide() {
    if (cfg.dwell) {
      if (visibleSince !== null) visibleMs += Date.now() - visibleSince;
      visibleSince = null;
      if (visibleMs >= 1000) {
        track("page_dwell", { seconds: Math.round(visibleMs / 1000) });
        visibleMs = 0;
      }
    }
    beacon();
  }

  function onScroll() {
    var root = document.documentElement;
    if (!root.scrollHeight) return;
    var seen = ((window.scrollY + window.innerHeight) / root.scrollHeight) * 100;
    [25, 50, 75, 100].forEach(function (p) {
      if (seen >= p - 0.5 && !scrolled[p]) {
        scrolled[p] = true;
        track("scroll_depth", { percent: p });
      }
    });
  }

  function onClick(e) {
    var el = e.target && e.target.closest && e.target.closest("[data-cdp-track]");
    if (!el) return;
    var props = parse(el.getAttribute("data-cdp-props") || "{}");
    track(el.getAttribute("data-cdp-track"), props && typeof props === "object" && !Array.isArray(props) ? props : {});
  }

  function listen() {
    visibleSince = document.visibilityState === "hidden" ? null : Date.now();
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "hidden") onHide();
      else if (visibleSince === null) visibleSince = Date.now();
    });
    window.addEventListener("pagehide", onHide);
    if (cfg.scroll) window.addEventListener("scroll", onScroll, { passive: true });
    if (cfg.clicks) document.addEventListener("click", onClick, true);
  }

  // --- the public calls ------------------------------------------------------------------

  function track(event, properties) {
    if (!event) return warn("track() needs an event name");
    return message("track", { event: String(event), properties: properties || {} });
  }

  function page(name, properties) {
    if (name && typeof name === "object") { properties = name; name = undefined; }
    scrolled = {};
    var props = pageInfo();
    for (var k in properties || {}) props[k] = properties[k];
    return message("page", { name: name || undefined, properties: props });
  }

  function identify(userId, traits, options) {
    if (userId && typeof userId === "object") { options = traits; traits = userId; userId = null; }
    if (userId) {
      userId = String(userId);
      if (userId !== ids.uid) ids.hash = null;
      ids.uid = userId;
    }
    if (options && options.userHash) ids.hash = options.userHash;
    persistIds();
    return message("identify", { traits: traits || {} });
  }

  function alias(userId, previousId) {
    var previous = previousId || ids.uid || anonymousId();
    ids.uid = String(userId);
    ids.hash = null;
    persistIds();
    return message("alias", { previousId: previous });
  }

  function reset() {
    ids = { aid: uuid() };
    persistIds();
  }

  function api(method, path, data) {
    var url = cfg.host + "/api/v1/" + path;
    var init = { method: method, headers: { Authorization: "Bearer " + cfg.writeKey }, credentials: "omit" };
    if (data) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(data);
    }
    return window.fetch(url, init).then(function (r) {
      return r.json().then(function (answer) {
        if (!r.ok) throw new Error((answer.error && answer.error.message) || "HTTP " + r.status);
        return answer;
      });
    });
  }

  function visitor() {
    var v = { anonymous_id: anonymousId() };
    if (ids.uid) v.user_id = ids.uid;
    if (ids.uid && ids.hash) v.user_hash = ids.hash;
    return v;
  }

  function localConsent() {
    var c = choice() || {};
    var purposes = {};
    for (var k in c) purposes[k] = { granted: c[k] === true, basis: "local" };
    return { profile_id: null, purposes: purposes };
  }

  var consent = {
    status: function () {
      var c = choice();
      return !c || typeof c.analytics !== "boolean" ? "unknown" : c.analytics ? "granted" : "denied";
    },

    set: function (purposes) {
      var before = cfg && allowed("analytics");
      var c = choice() || {};
      for (var k in purposes) c[k] = purposes[k];
      cookie("cdp_consent", JSON.stringify(c), YEAR);
      if (!cfg) return Promise.resolve(localConsent());
      var granted = allowed("analytics");
      if (c.analytics === false) {
        held = [];
        queue = [];
        ls.set("cdp_queue", null);
      }
      emit(document, "cdp:consent", c);
      // Nothing leaves the browser in opt-in mode until analytics is granted; a choice
      // that withdraws a grant (or an opt-out default) is recorded by the server.
      if (!granted && !before && cfg.consent === "opt-in") return Promise.resolve(localConsent());
      persistIds();
      var request = visitor();
      request.purposes = purposes;
      request.policy_version = cfg.policyVersion;
      request.source = "banner";
      var recorded = api("POST", "consent", request);
      return recorded.then(release, release).then(function () {
        if (cfg.decide) decide();
        return recorded;
      });
    },

    get: function () {
      if (!cfg || (cfg.consent === "opt-in" && !mayStore())) return Promise.resolve(localConsent());
      var v = visitor();
      return api("GET", "consent?" + Object.keys(v).map(function (k) {
        return k + "=" + encodeURIComponent(v[k]);
      }).join("&"));
    }
  };

  // Held events follow a grant, after the consent record (the server gates on it).
  function release() {
    var h = held;
    held = [];
    h.forEach(enqueue);
    return flush();
  }

  // --- decisions and rendering ------------------------------------------------------------

  function lookup(obj, path) {
    return path.split(".").reduce(function (o, k) { return o && typeof o === "object" ? o[k] : undefined; }, obj);
  }

  // The fields of a slot (not those of its rendered items), or of one item (`self`: the
  // item's own top element counts too).
  function fill(root, content, self) {
    var fields = Array.prototype.slice.call(root.querySelectorAll("[data-cdp-field]"));
    if (self) fields.unshift(root);
    for (var i = 0; i < fields.length; i++) {
      var el = fields[i];
      if (!el.hasAttribute("data-cdp-field") || (!self && el.closest("[data-cdp-rendered]"))) continue;
      var name = el.getAttribute("data-cdp-field");
      var value = lookup(content, name);
      var attr = el.getAttribute("data-cdp-attr");
      // A field the chosen variant does not have is emptied (the markup's default
      // belongs to another variant); an attribute keeps its default.
      if (value === undefined || value === null) value = attr ? null : "";
      if (value === null || typeof value === "object") continue;
      value = String(value);
      if (attr) {
        // Content chooses a link or an image, never script or style.
        if (/^(on|style$|srcdoc$)/i.test(attr) || /^\s*(javascript|vbscript):/i.test(value)) continue;
        el.setAttribute(attr, value);
      } else if (name === "html") el.innerHTML = value; // sanitized by the server (nh3)
      else el.textContent = value;
    }
  }

  function render(el, key, decision) {
    var content = decision.content || {};
    fill(el, content);
    var tpl = el.querySelector("template[data-cdp-item]");
    if (tpl && Array.isArray(content.items)) {
      var parent = tpl.parentNode;
      var old = parent.querySelectorAll("[data-cdp-rendered]");
      for (var i = 0; i < old.length; i++) if (old[i].parentNode === parent) parent.removeChild(old[i]);
      content.items.forEach(function (item) {
        var clone = tpl.content.cloneNode(true);
        while (clone.firstElementChild) {
          var c = clone.firstElementChild;
          c.setAttribute("data-cdp-rendered", "");
          fill(c, item, true);
          parent.insertBefore(c, tpl);
        }
      });
    }
    el.setAttribute("data-cdp-variant", decision.variant || "");
    el.setAttribute("data-cdp-source", decision.source || "");
    el.removeAttribute("hidden");
    emit(el, "cdp:decision", { slot: key, decision: decision });
  }

  function contextOf(el, into) {
    for (var i = 0; el && i < el.attributes.length; i++) {
      var a = el.attributes[i];
      if (a.name.indexOf("data-cdp-context-") === 0) into[a.name.slice(17).replace(/-/g, "_")] = a.value;
    }
  }

  function decide(slots, context) {
    var els = Array.prototype.slice.call(document.querySelectorAll("[data-cdp-slot]"));
    var keys = typeof slots === "string" ? [slots] : slots || els.map(function (el) { return el.getAttribute("data-cdp-slot"); });
    keys = keys.filter(function (k, i) { return k && keys.indexOf(k) === i; });
    if (!cfg || !keys.length || !mayDecide()) return Promise.resolve({});
    var ctx = { page: window.location.pathname };
    contextOf(document.body, ctx);
    els.forEach(function (el) { if (keys.indexOf(el.getAttribute("data-cdp-slot")) >= 0) contextOf(el, ctx); });
    for (var k in context || {}) ctx[k] = context[k];
    var request = visitor();
    request.slots = keys;
    request.context = ctx;
    return api("POST", "decide", request).then(function (answer) {
      var decisions = answer.decisions || {};
      els.forEach(function (el) {
        var key = el.getAttribute("data-cdp-slot");
        if (decisions[key]) render(el, key, decisions[key]);
      });
      emit(document, "cdp:decisions", decisions);
      return decisions;
    }, function (err) {
      warn("decide: " + err.message); // the slots keep their default markup
      return {};
    });
  }

  // --- start -----------------------------------------------------------------------------

  function init(options) {
    if (cfg) return warn("init() called twice; the first settings stay");
    var c = {};
    for (var k in DEFAULTS) c[k] = options && options[k] !== undefined ? options[k] : DEFAULTS[k];
    if (!c.writeKey) return warn("init() needs a writeKey");
    c.host = String(c.host || "").replace(/\/+$/, "");
    cfg = c;
    loadIds();
    anonymousId();
    if (mayStore()) queue = (parse(ls.get("cdp_queue")) || []).filter(function (m) { return m && m.messageId; });
    var pending = early;
    early = [];
    pending.forEach(enqueue);
    listen();
    if (cfg.autoPage) page();
    if (queue.length) schedule(0);
    if (cfg.decide) {
      if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { decide(); });
      else decide();
    }
  }

  // Reads <script src="…/cdp.js" data-write-key="wk_…" data-host="" data-consent="opt-in">.
  function fromScript(script) {
    var d = script && script.dataset;
    if (!d || !d.writeKey) return;
    var flag = function (v) { return v === undefined ? undefined : v !== "false"; };
    var num = function (v) { return v === undefined ? undefined : Number(v); };
    init({
      writeKey: d.writeKey,
      host: d.host,
      consent: d.consent,
      policyVersion: d.policyVersion,
      autoPage: flag(d.autoPage),
      scroll: flag(d.scroll),
      dwell: flag(d.dwell),
      clicks: flag(d.clicks),
      decide: flag(d.decide),
      flushInterval: num(d.flushInterval),
      batchSize: num(d.batchSize)
    });
  }

  window.cdp = {
    VERSION: VERSION,
    init: init,
    track: track,
    page: page,
    identify: identify,
    alias: alias,
    reset: reset,
    anonymousId: anonymousId,
    userId: function () { return ids.uid || null; },
    flush: flush,
    consent: consent,
    decide: decide
  };
  fromScript(document.currentScript || document.querySelector("script[data-write-key]"));
})(window, document);
