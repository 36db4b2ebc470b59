/* The demo shop's own wiring around cdp.js: consent banner, product views, purchases,
 * login, and the "Why this?" drawer. An external file (no inline code): the pages run
 * under a strict Content-Security-Policy. */
(function () {
  "use strict";

  function $(id) { return document.getElementById(id); }
  function data(name) {
    var raw = document.body.getAttribute("data-" + name);
    if (!raw) return null;
    try { return JSON.parse(raw); } catch (e) { return null; }
  }

  function text(el, value) { el.textContent = value; return el; }
  function item(label, value) {
    var li = document.createElement("div");
    li.appendChild(text(document.createElement("dt"), label));
    li.appendChild(text(document.createElement("dd"), value));
    return li;
  }

  function showDecisions(decisions) {
    var list = $("why-list");
    list.textContent = "";
    var keys = Object.keys(decisions || {});
    if (!keys.length) {
      list.appendChild(text(document.createElement("li"),
        "No decision: the page shows its default content (" + consentLine() + ")."));
      list.firstChild.className = "muted";
      return;
    }
    keys.forEach(function (slot) {
      var d = decisions[slot];
      var li = document.createElement("li");
      li.setAttribute("data-why-slot", slot);
      li.appendChild(text(document.createElement("h3"), slot));
      var dl = document.createElement("dl");
      dl.appendChild(item("Variant", d.variant || "–"));
      dl.appendChild(item("Chosen by", d.source || "–"));
      if (d.rule) dl.appendChild(item("Rule", d.rule));
      if (d.experiment) dl.appendChild(item("Experiment", d.experiment.key + " → " + d.experiment.variant));
      dl.appendChild(item("Why", d.reason || "–"));
      li.appendChild(dl);
      list.appendChild(li);
    });
  }

  function consentLine() {
    var s = cdp.consent.status();
    return s === "granted" ? "tracking allowed" : s === "denied" ? "declined: nothing is collected" : "no choice yet: nothing is collected";
  }

  function refreshMeta() {
    $("why-visitor").textContent = (cdp.userId() ? cdp.userId() + " · " : "") + cdp.anonymousId();
    $("why-consent").textContent = consentLine();
  }

  function decideAll() {
    return cdp.decide().then(function (decisions) {
      showDecisions(decisions);
      refreshMeta();
      return decisions;
    });
  }

  function banner(show) { $("consent-banner").hidden = !show; }

  function choose(accepted) {
    var purposes = accepted
      ? { analytics: true, personalization: $("consent-personalization").checked, marketing: $("consent-marketing").checked }
      : { analytics: false, personalization: false, marketing: false };
    banner(false);
    return Promise.resolve(cdp.consent.set(purposes)).then(decideAll, decideAll);
  }

  // A recommendations area with nothing to recommend stays out of sight.
  document.addEventListener("cdp:decision", function (e) {
    var el = e.target, content = (e.detail.decision || {}).content || {};
    if (el.querySelector("template[data-cdp-item]") && !(content.items || []).length) el.hidden = true;
  });

  function start() {
    if (!window.cdp) return;
    var body = document.body;
    if (body.getAttribute("data-logout")) cdp.reset();
    var who = data("identify");
    if (who) cdp.identify(who.userId, who.traits, { userHash: who.userHash });
    var product = data("product");
    if (product) cdp.track("product_viewed", product);
    var purchase = data("purchase");
    if (purchase) cdp.track("purchase", purchase);

    $("consent-accept").addEventListener("click", function () { choose(true); });
    $("consent-decline").addEventListener("click", function () { choose(false); });
    $("consent-open").addEventListener("click", function () { banner(true); });
    var toggle = $("why-toggle"), drawer = $("why");
    function setOpen(open) { drawer.hidden = !open; toggle.setAttribute("aria-expanded", String(open)); refreshMeta(); }
    toggle.addEventListener("click", function () { setOpen(drawer.hidden); });
    $("why-close").addEventListener("click", function () { setOpen(false); });

    banner(cdp.consent.status() === "unknown");
    refreshMeta();
    decideAll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
