// xaudit web page: a thin client of the REST API under /api/v1.
// Every string that came from a user or the server is shown with textContent, never as HTML.
"use strict";

(function () {
  const API = "/api/v1";
  const KEY_STORE = "xaudit.apiKey";
  const POLL_MS = 1000;
  const state = { model: null, dataset: null, auditId: null, timer: null, reportUrl: null };

  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ key
  function getKey() {
    return sessionStorage.getItem(KEY_STORE) || "";
  }

  function showKeyStatus() {
    const key = getKey();
    $("key-status").textContent = key
      ? "Using key " + key.slice(0, 8) + "… (kept in this tab only)."
      : "No key yet. It is kept in this tab only (sessionStorage).";
    $("key-status").classList.toggle("ok", Boolean(key));
  }

  // ------------------------------------------------------------------ messages
  function showError(title, text) {
    const box = $("message");
    box.className = "message error";
    $("message-title").textContent = title;
    $("message-text").textContent = text;
    box.hidden = false;
  }

  function showInfo(title, text) {
    const box = $("message");
    box.className = "message info";
    $("message-title").textContent = title;
    $("message-text").textContent = text;
    box.hidden = false;
  }

  function clearMessage() {
    $("message").hidden = true;
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // Calls the API with the pasted key; turns {error: {code, message}} into an ApiError.
  async function api(method, path, body) {
    const key = getKey();
    if (!key) {
      throw new ApiError(0, "no_key", "paste an API key in step 1 first");
    }
    const init = { method: method, headers: { Authorization: "Bearer " + key } };
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, "network", "the server could not be reached (" + err.message + ")");
    }
    if (response.ok) {
      return response;
    }
    let code = "http_" + response.status;
    let message = response.statusText || "request failed";
    try {
      const data = await response.json();
      if (data && data.error) {
        code = String(data.error.code || code);
        message = String(data.error.message || message);
      }
    } catch (_ignored) {
      // not JSON (a proxy's error page): keep the status line
    }
    throw new ApiError(response.status, code, message);
  }

  function reportError(what, err) {
    if (err instanceof ApiError) {
      const status = err.status ? " (HTTP " + err.status + ", " + err.code + ")" : "";
      showError(what + " failed" + status + ":", err.message);
    } else {
      showError(what + " failed:", String(err && err.message ? err.message : err));
    }
  }

  // ------------------------------------------------------------------ uploads
  function addRow(list, label, value) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }

  function shapeText(shape) {
    if (!Array.isArray(shape)) return "?";
    return "(N, " + shape.map((d) => (d === null ? "?" : String(d))).join(", ") + ")";
  }

  function listText(items, limit) {
    if (!Array.isArray(items) || items.length === 0) return "";
    const shown = items.slice(0, limit).map(String).join(", ");
    return items.length > limit ? shown + ", … (" + items.length + ")" : shown;
  }

  function describe(kind, item, fileName) {
    const box = $(kind === "models" ? "model-result" : "dataset-result");
    box.replaceChildren();
    const title = document.createElement("p");
    title.className = "result-title";
    const name = document.createElement("strong");
    name.className = "artifact-name";
    name.textContent = item.name;
    title.append(name, " version " + item.version + " stored");
    const list = document.createElement("dl");
    addRow(list, "file", fileName);
    addRow(list, "id", item.id);
    addRow(list, "sha256", String(item.sha256 || "").slice(0, 16) + "…");
    const spec = item.spec || {};
    if (kind === "models") {
      if (spec.model_name) addRow(list, "Keras name", String(spec.model_name));
      if (spec.input_shape) {
        const kind = spec.input_kind ? " " + String(spec.input_kind) : "";
        addRow(list, "input", shapeText(spec.input_shape) + kind);
      }
      if (spec.task) addRow(list, "task", String(spec.task));
      if (spec.n_params !== undefined) addRow(list, "parameters", String(spec.n_params));
      addRow(list, "background", item.background ? item.background.rows + " rows" : "none");
    } else {
      if (spec.rows !== undefined) addRow(list, "rows", String(spec.rows));
      if (spec.row_shape) addRow(list, "row shape", shapeText(spec.row_shape));
      if (spec.has_labels !== undefined) addRow(list, "labels", spec.has_labels ? "yes" : "no");
      const features = listText(spec.feature_names, 12);
      if (features) addRow(list, "features", features);
      const classes = listText(spec.class_names, 12);
      if (classes) addRow(list, "classes", classes);
      const sensitive = listText(spec.sensitive, 8);
      if (sensitive) addRow(list, "sensitive", sensitive);
    }
    box.append(title, list);
    box.hidden = false;
  }

  async function upload(event) {
    event.preventDefault();
    clearMessage();
    const form = event.currentTarget;
    const kind = form.dataset.kind;
    const what = kind === "models" ? "Model upload" : "Dataset upload";
    const fileInput = form.querySelector("input[name=file]");
    const file = fileInput.files[0];
    if (!file) {
      showError(what + ":", "choose a file first");
      return;
    }
    const data = new FormData();
    data.append("file", file, file.name);
    data.append("name", form.querySelector("input[name=name]").value.trim());
    const label = form.querySelector("input[name=label]");
    if (label && label.value.trim()) data.append("label", label.value.trim());
    const sensitive = form.querySelector("input[name=sensitive]");
    if (sensitive && sensitive.value.trim()) data.append("sensitive", sensitive.value.trim());
    const background = form.querySelector("input[name=background]");
    if (background && background.files[0]) {
      data.append("background", background.files[0], background.files[0].name);
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      const item = await (await api("POST", API + "/" + kind, data)).json();
      if (kind === "models") state.model = item; else state.dataset = item;
      describe(kind, item, file.name);
      showInfo("Stored:", item.name + " version " + item.version);
    } catch (err) {
      reportError(what, err);
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
      updateStartButton();
    }
  }

  // ------------------------------------------------------------------ audits
  function updateStartButton() {
    $("start-audit").disabled = !(state.model && state.dataset) || state.timer !== null;
  }

  function resetReport() {
    if (state.reportUrl) URL.revokeObjectURL(state.reportUrl);
    state.reportUrl = null;
    $("report-links").hidden = true;
    $("open-report").removeAttribute("href");
    $("download-json").removeAttribute("href");
  }

  async function startAudit(event) {
    event.preventDefault();
    clearMessage();
    resetReport();
    const methods = $("audit-methods").value.split(/[\s,]+/).filter(Boolean);
    const config = methods.length ? { methods: methods } : {};
    $("start-audit").disabled = true;
    try {
      const audit = await (await api("POST", API + "/audits", {
        model_id: state.model.id, dataset_id: state.dataset.id, config: config,
      })).json();
      state.auditId = audit.id;
      $("audit-id").textContent = audit.id;
      $("audit-progress").hidden = false;
      showAudit(audit);
      state.timer = window.setTimeout(poll, POLL_MS);
    } catch (err) {
      reportError("Starting the audit", err);
    } finally {
      updateStartButton();
    }
  }

  function showAudit(audit) {
    const progress = Math.max(0, Math.min(1, Number(audit.progress) || 0));
    $("audit-bar").value = progress;
    const status = $("audit-status");
    status.textContent = String(audit.status);
    status.className = "badge " + (/^[a-z]+$/.test(audit.status) ? audit.status : "");
    $("audit-stage").textContent = audit.stage ? String(audit.stage).replace(/_/g, " ") : "";
    $("audit-percent").textContent = Math.round(progress * 100) + "%";
    $("audit-progress").dataset.status = String(audit.status);
  }

  async function poll() {
    const auditId = state.auditId;
    try {
      const audit = await (await api("GET", API + "/audits/" + encodeURIComponent(auditId))).json();
      if (auditId !== state.auditId) return;
      showAudit(audit);
      if (audit.status === "succeeded") {
        state.timer = null;
        await loadReport(audit);
      } else if (audit.status === "failed") {
        state.timer = null;
        const error = audit.error || {};
        showError("The audit failed (" + String(error.code || "audit_failed") + "):",
                  String(error.message || "no reason was recorded"));
      } else {
        state.timer = window.setTimeout(poll, POLL_MS);
      }
    } catch (err) {
      state.timer = null;
      reportError("Following the audit", err);
    } finally {
      updateStartButton();
    }
  }

  // The report routes need the key, so the page fetches the report and links to it as a
  // blob: URL (it opens in a new tab without the key ever being in a URL).
  async function loadReport(audit) {
    try {
      const html = await (await api("GET", audit.report_url)).blob();
      const json = await (await api("GET", audit.report_json_url)).blob();
      resetReport();
      state.reportUrl = URL.createObjectURL(new Blob([html], { type: "text/html" }));
      $("open-report").href = state.reportUrl;
      $("download-json").href = URL.createObjectURL(
        new Blob([json], { type: "application/json" }));
      $("report-links").hidden = false;
      showInfo("Done:", "the audit succeeded; open the report below.");
    } catch (err) {
      reportError("Fetching the report", err);
    }
  }

  // ------------------------------------------------------------------ wiring
  document.addEventListener("DOMContentLoaded", function () {
    $("key-form").addEventListener("submit", function (event) {
      event.preventDefault();
      const key = $("api-key").value.trim();
      if (!key) {
        showError("API key:", "paste a key first");
        return;
      }
      sessionStorage.setItem(KEY_STORE, key);
      $("api-key").value = "";
      clearMessage();
      showKeyStatus();
    });
    $("forget-key").addEventListener("click", function () {
      sessionStorage.removeItem(KEY_STORE);
      showKeyStatus();
    });
    for (const form of document.querySelectorAll("form.upload")) {
      form.addEventListener("submit", upload);
    }
    $("audit-form").addEventListener("submit", startAudit);
    showKeyStatus();
    updateStartButton();
  });
})();
