/* seqserve's page: plain JavaScript, no build step, no third-party code, no request
 * that leaves the server it came from.
 *
 * Five parts: sentiment with an attention heatmap (/attention), batch sentiment
 * (/sentiment with `texts`), a generation playground (/generate, streamed as SSE and
 * read through fetch + ReadableStream so a Stop can abort it), model cards (/v1/models)
 * and live request rate and latency (/v1/stats). Every failure ends in the one error
 * banner (data-testid="error") in plain words. The data-testid attributes are a stable
 * interface for automation: keep them.
 */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORE = "seqserve.apiKey";
  const config = { api_key_required: false, max_texts: 64, max_new_chars: 2000 };

  // ---------------------------------------------------------------- errors
  class ApiProblem extends Error {
    constructor(message, status = 0, code = "") {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function showError(message) {
    $("error-text").textContent = message;
    $("error").hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error-text").textContent = "";
  }

  function report(err) {
    if (err && err.name === "AbortError") return;
    showError(err instanceof ApiProblem ? err.message
      : "Something went wrong in the page: " + (err && err.message ? err.message : String(err)));
  }

  // ---------------------------------------------------------------- API key
  function storedKey() {
    try { return sessionStorage.getItem(KEY_STORE) || ""; } catch { return ""; }
  }

  function showKeyForm() {
    const form = $("key-form");
    const wasHidden = form.hidden;
    form.hidden = false;
    if (wasHidden) $("key-input").focus();
  }

  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) { showError("Type the API key first."); return; }
    try { sessionStorage.setItem(KEY_STORE, key); } catch { /* private mode: kept nowhere */ }
    $("key-input").value = "";
    $("key-form").hidden = true;
    clearError();
    loadModels();  // they may have been refused without the key
    refreshLive();
  });

  $("key-forget").addEventListener("click", () => {
    try { sessionStorage.removeItem(KEY_STORE); } catch { /* nothing stored */ }
    $("key-input").value = "";
    if (config.api_key_required) $("key-input").focus();
  });

  // ---------------------------------------------------------------- HTTP
  async function problemFrom(resp) {
    let message = "";
    try {
      const body = await resp.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch { /* not the API's JSON error shape */ }
    if (!message) message = `the server answered ${resp.status} ${resp.statusText}`.trim();
    if (resp.status === 401) {
      showKeyForm();
      return new ApiProblem(`API key refused (${message}). Enter the key above and try again.`,
        401, "unauthorized");
    }
    if (resp.status === 503) message += " (the server is busy: try again in a moment)";
    return new ApiProblem(message.charAt(0).toUpperCase() + message.slice(1), resp.status);
  }

  async function api(path, { method = "GET", body, signal, auth = true } = {}) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const key = auth ? storedKey() : "";
    if (key) headers.Authorization = "Bearer " + key;
    let resp;
    try {
      resp = await fetch(path, {
        method, headers, signal, cache: "no-store",
        body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
      });
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new ApiProblem("Could not reach the server (network error). Is it running?", 0, "network");
    }
    if (!resp.ok) throw await problemFrom(resp);
    return resp;
  }

  function busy(button, on) {
    button.disabled = on;
    button.setAttribute("aria-busy", on ? "true" : "false");
  }

  // ---------------------------------------------------------------- formatting
  const fmt = (x, digits = 4) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "—");

  function fmtValue(v) {
    if (v === null || v === undefined) return "—";
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return v.toLocaleString("en");
      return Math.abs(v) < 1e-3 ? v.toExponential(2) : String(Number(v.toPrecision(4)));
    }
    if (Array.isArray(v)) return v.map(fmtValue).join(", ");
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k in node && k !== "role") node[k] = v;
      else node.setAttribute(k, v);
    }
    node.append(...children);
    return node;
  }

  // ---------------------------------------------------------------- 1. sentiment
  // A token of text between two read tokens means the model skipped it (head+tail
  // truncation): the tokenizer reads letters/digits and "!" "?", and drops <br />.
  const BR = /<\s*br\s*\/?\s*>/gi;
  const TOKEN_CHAR = /[\p{L}\p{N}!?]/u;
  const gapHasTokens = (gap) => TOKEN_CHAR.test(gap.replace(BR, " "));

  const heat = { marks: [], maxWeight: 0 };

  function shade(mark, t) {
    // white -> #1d4ed8: every channel falls as t rises, so a higher weight is darker
    const c = [255 + (29 - 255) * t, 255 + (78 - 255) * t, 255 + (216 - 255) * t].map(Math.round);
    mark.style.backgroundColor = `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
    mark.classList.toggle("dark", t > 0.55);
  }

  function applyShading() {
    const on = $("topk-on").checked;
    const k = Math.max(1, parseInt($("topk-k").value, 10) || 1);
    for (const m of heat.marks) {
      const rank = Number(m.dataset.rank);
      const t = heat.maxWeight > 0 ? Number(m.dataset.weight) / heat.maxWeight : 0;
      shade(m, t);
      m.classList.toggle("off", on && rank > k);
    }
  }

  function describeMark(m) {
    const w = Number(m.dataset.weight);
    return `"${m.textContent}": weight ${w.toFixed(4)} (${(w * 100).toFixed(2)} %), ` +
      `rank ${m.dataset.rank} of ${heat.marks.length}`;
  }

  // One meter per label, in the answer's order: negative and positive for the two-label
  // models, the model's own labels (any number) for others.
  function renderProbabilities(probs) {
    const rows = [];
    for (const [name, p] of Object.entries(probs || {})) {
      const id = "prob-" + name.replace(/[^A-Za-z0-9_-]/g, "_");
      rows.push(el("label", { for: id }, `P(${name})`),
        el("meter", { id, min: 0, max: 1, value: p, dataset: { testid: "prob", label: name } }),
        el("span", { id: id + "-text" }, fmt(p)));
    }
    $("sentiment-probs").replaceChildren(...rows);
  }

  // The classifier to ask (empty: the server's default); the `model` field of a body.
  function withClassifier(body) {
    const model = $("classify-model").value;
    if (model) body.model = model;
    return body;
  }

  function renderAttention(text, data) {
    const label = $("sentiment-label");
    label.textContent = data.label;
    label.className = "label-" + data.label;
    $("sentiment-score").textContent = fmt(data.score);
    renderProbabilities(data.probabilities);
    $("sentiment-meta").textContent =
      `${data.tokens_read} tokens read · ${data.model} ${data.model_version}`;

    const tokens = data.tokens || [];
    const note = $("truncated-note");
    if (data.truncated) {
      note.textContent = `Truncated: this review is longer than the model reads. It read ` +
        `${data.tokens_read} tokens (the start and the end); the greyed, striped text was skipped.`;
      note.hidden = false;
    } else if (!tokens.length) {
      note.textContent = "The model found no word it could read in this text.";
      note.hidden = false;
    } else {
      note.hidden = true;
    }

    // Offsets count Unicode code points (Python string indices), not UTF-16 units.
    const chars = Array.from(text);
    const order = tokens.map((t, i) => i).sort((a, b) => tokens[b].weight - tokens[a].weight);
    const rank = new Array(tokens.length);
    order.forEach((i, r) => { rank[i] = r + 1; });

    const frag = document.createDocumentFragment();
    const gap = (s) => {
      if (!s) return;
      if (data.truncated && gapHasTokens(s)) {
        frag.append(el("span", { class: "skipped", title: "Not read by the model (truncated)" }, s));
      } else {
        frag.append(s);
      }
    };
    heat.marks = [];
    heat.maxWeight = tokens.reduce((m, t) => Math.max(m, t.weight), 0);
    let pos = 0;
    tokens.forEach((t, i) => {
      gap(chars.slice(pos, t.start).join(""));
      const mark = el("mark", {
        tabIndex: i === 0 ? 0 : -1,
        dataset: { testid: "attention-token", weight: String(t.weight), start: String(t.start),
          end: String(t.end), rank: String(rank[i]), index: String(i) },
      }, chars.slice(t.start, t.end).join(""));
      mark.title = `weight ${t.weight.toFixed(4)}, rank ${rank[i]}`;
      mark.setAttribute("aria-label", `${mark.textContent}, weight ${t.weight.toFixed(4)}, rank ${rank[i]}`);
      heat.marks.push(mark);
      frag.append(mark);
      pos = Math.max(pos, t.end);
    });
    gap(chars.slice(pos).join(""));
    const box = $("heatmap");
    box.replaceChildren(frag);
    $("token-info").textContent = "";
    applyShading();

    const tbody = $("weights-table").tBodies[0];
    tbody.replaceChildren(...tokens.map((t, i) => el("tr", {},
      el("td", { class: "num" }, String(i + 1)),
      el("td", {}, chars.slice(t.start, t.end).join("")),
      el("td", { class: "num" }, t.weight.toFixed(4)),
      el("td", { class: "num" }, String(rank[i])),
      el("td", {}, `${t.start}–${t.end}`))));

    // An n-gram term, if the model has one, contributes beside the attention words.
    const ngrams = data.ngrams || data.ngram_contributions || null;
    $("ngrams").hidden = !(Array.isArray(ngrams) && ngrams.length);
    if (Array.isArray(ngrams)) {
      $("ngram-note").textContent = typeof data.ngram_logit === "number"
        ? `The model's n-gram term adds ${fmt(data.ngram_logit, 3)} to the log-odds of positive; ` +
          "the attention weights above do not cover it. Largest contributions first."
        : "";
      $("ngram-table").tBodies[0].replaceChildren(...ngrams.slice(0, 15).map((g) => el("tr", {},
        el("td", {}, String(g.ngram ?? g.text ?? "") + scopeNote(g)),
        el("td", { class: "num" }, fmt(g.contribution ?? g.weight)))));
    }
    // ERASER faithfulness of the explanation, when it was asked for.
    const faith = Array.isArray(data.faithfulness) ? data.faithfulness : [];
    $("faithfulness").hidden = !faith.length;
    const names = { attention: "attention weights", ngrams: "n-gram contributions" };
    $("faith-table").tBodies[0].replaceChildren(...faith.map((f) => el("tr", {},
      el("td", {}, names[f.explanation] || String(f.explanation)),
      el("td", { class: "num" }, `${Math.round(f.k * 100)} %`),
      el("td", { class: "num" }, String(f.tokens)),
      el("td", { class: "num" }, fmt(f.comprehensiveness, 3)),
      el("td", { class: "num" }, fmt(f.sufficiency, 3)))));
    $("sentiment-result").hidden = false;
  }

  // Which of the uni-, bi- and trigram ending at a token were read in a negator's scope,
  // and whether they come just before a contrast word ("but", "though", ...).
  function scopeNote(g) {
    let note = "";
    if (Array.isArray(g.negated_orders)) {
      const names = ["word", "bigram", "trigram"].filter((_, i) => g.negated_orders[i]);
      if (names.length) note += ` (negated: ${names.join(", ")})`;
    } else if (g.negated) {
      note += " (negated)";
    }
    if (g.before_contrast) note += " (before a contrast word)";
    return note;
  }

  function focusMark(i) {
    const marks = heat.marks;
    if (!marks.length) return;
    const j = Math.max(0, Math.min(marks.length - 1, i));
    for (const m of marks) if (m.tabIndex === 0) m.tabIndex = -1;
    marks[j].tabIndex = 0;
    marks[j].focus();
  }

  $("heatmap").addEventListener("keydown", (ev) => {
    const cur = ev.target.closest("mark");
    if (!cur) return;
    const i = Number(cur.dataset.index);
    const moves = { ArrowRight: i + 1, ArrowDown: i + 1, ArrowLeft: i - 1, ArrowUp: i - 1,
      Home: 0, End: heat.marks.length - 1, PageDown: i + 20, PageUp: i - 20 };
    if (ev.key in moves) {
      ev.preventDefault();
      focusMark(moves[ev.key]);
    }
  });
  $("heatmap").addEventListener("focusin", (ev) => {
    const m = ev.target.closest("mark");
    if (m) $("token-info").textContent = describeMark(m);
  });
  $("heatmap").addEventListener("mouseover", (ev) => {
    const m = ev.target.closest("mark");
    if (m) $("token-info").textContent = describeMark(m);
  });
  $("topk-on").addEventListener("change", applyShading);
  $("topk-k").addEventListener("input", applyShading);

  $("sentiment-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearError();
    const text = $("sentiment-input").value;
    if (!text.trim()) { showError("Type or paste a review first."); return; }
    const button = ev.submitter || document.querySelector('[data-testid="sentiment-submit"]');
    busy(button, true);
    try {
      const resp = await api("/attention", { method: "POST",
        body: withClassifier({ text, faithfulness: $("faith-on").checked }) });
      renderAttention(text, await resp.json());
    } catch (err) {
      report(err);
    } finally {
      busy(button, false);
    }
  });

  for (const b of document.querySelectorAll("[data-example]")) {
    b.addEventListener("click", () => {
      const ex = (window.SEQSERVE_EXAMPLES || {})[b.dataset.example];
      if (!ex) return;
      $("sentiment-input").value = ex.text;
      $("sentiment-input").focus();
    });
  }

  // ---------------------------------------------------------------- 2. batch
  const batch = { rows: [], key: "index", dir: 1 };

  function renderBatch() {
    const { key, dir } = batch;
    const rows = [...batch.rows].sort((a, b) => {
      const x = a[key], y = b[key];
      const c = typeof x === "string" ? x.localeCompare(y) : x - y;
      return (c || a.index - b.index) * dir;
    });
    const tbody = $("batch-table").tBodies[0];
    tbody.replaceChildren(...rows.map((r) => el("tr", {
      dataset: { testid: "batch-row", index: String(r.index), label: r.label, score: String(r.score) },
    },
      el("td", { class: "num" }, String(r.index)),
      el("td", { class: "text" }, r.text),
      el("td", { class: "nowrap label-" + r.label }, r.label),
      el("td", { class: "num" }, fmt(r.score)),
      el("td", { class: "num" }, fmt(r.positive)),
      el("td", { class: "num" }, String(r.tokens) + (r.truncated ? " (truncated)" : "")))));
    for (const th of $("batch-table").tHead.rows[0].cells) {
      const k = th.querySelector("button").dataset.sort;
      th.setAttribute("aria-sort", k === key ? (dir > 0 ? "ascending" : "descending") : "none");
    }
    $("batch-table").hidden = false;
  }

  $("batch-table").tHead.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-sort]");
    if (!b) return;
    const k = b.dataset.sort;
    batch.dir = batch.key === k ? -batch.dir : 1;
    batch.key = k;
    renderBatch();
  });

  $("batch-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearError();
    const lines = $("batch-input").value.split(/\r?\n/).filter((l) => l.trim() !== "");
    if (!lines.length) { showError("Paste at least one line of text."); return; }
    if (lines.length > config.max_texts) {
      showError(`At most ${config.max_texts} lines per request (the server's limit); you pasted ${lines.length}.`);
      return;
    }
    const button = ev.submitter || document.querySelector('[data-testid="batch-submit"]');
    busy(button, true);
    try {
      const resp = await api("/sentiment", { method: "POST",
        body: withClassifier({ texts: lines }) });
      const data = await resp.json();
      batch.rows = data.results.map((r, i) => ({
        index: i + 1, text: lines[i], label: r.label, score: r.score,
        positive: r.probabilities.positive, tokens: r.tokens_read, truncated: r.truncated,
      }));
      batch.key = "index";
      batch.dir = 1;
      renderBatch();
      $("batch-csv").disabled = false;
      $("batch-meta").textContent = `${lines.length} texts · ${data.model} ${data.model_version}`;
    } catch (err) {
      report(err);
    } finally {
      busy(button, false);
    }
  });

  function csvCell(v) {
    let s = String(v);
    // a cell starting with = + - @ would run as a formula in a spreadsheet
    if (typeof v === "string" && /^[=+\-@\t\r]/.test(s)) s = "'" + s;
    return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  }

  $("batch-csv").addEventListener("click", () => {
    const head = ["index", "text", "label", "score", "p_positive", "tokens_read", "truncated"];
    const lines = [head.join(",")];
    for (const r of batch.rows) {
      lines.push([r.index, r.text, r.label, r.score, r.positive, r.tokens, r.truncated].map(csvCell).join(","));
    }
    const url = URL.createObjectURL(new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" }));
    const a = el("a", { href: url, download: "sentiment.csv" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  });

  // ---------------------------------------------------------------- 3. generation
  const gen = { abort: null, last: null };

  function readGenerateForm() {
    const prompt = $("generate-prompt").value;
    const num = (id, name, { int = false, min = -Infinity, max = Infinity, optional = false } = {}) => {
      const raw = $(id).value.trim();
      if (raw === "") {
        if (optional) return null;
        throw new ApiProblem(`${name}: give a value.`);
      }
      const x = Number(raw);
      if (!Number.isFinite(x) || (int && !Number.isInteger(x)) || x < min || x > max) {
        const kind = int ? "a whole number" : "a number";
        const range = max < Infinity ? ` from ${min} to ${max}` : min > -Infinity ? ` of at least ${min}` : "";
        throw new ApiProblem(`${name}: must be ${kind}${range}.`);
      }
      return x;
    };
    const body = {
      prompt,
      temperature: num("generate-temperature", "Temperature", { min: 0, max: 10 }),
      max_new_chars: num("generate-max", "max_new_chars", { int: true, min: 1 }),
      stream: true,
    };
    const topK = num("generate-top-k", "top_k", { int: true, min: 1, optional: true });
    if (topK !== null) body.top_k = topK;
    const topP = num("generate-top-p", "top_p", { min: 0, max: 1, optional: true });
    if (topP !== null) {
      if (topP <= 0) throw new ApiProblem("top_p: must be more than 0 and at most 1.");
      body.top_p = topP;
    }
    const stop = $("generate-stop-seqs").value.split(/\r?\n/).filter((s) => s !== "")
      .map((s) => s.replace(/\\n/g, "\n").replace(/\\t/g, "\t"));
    if (stop.length) body.stop = stop;
    const model = $("generate-model").value;  // empty until the models are listed: the default
    if (model) body.model = model;
    const seed = $("generate-seed").value.trim();
    if (seed !== "" && !/^\d+$/.test(seed)) throw new ApiProblem("Seed: must be a whole number of 0 or more, or empty.");
    return { body, seed };
  }

  function requestJson({ body, seed }) {
    // Seeds go in as written: JSON numbers above 2**53 would lose digits in JavaScript.
    if (!seed) return JSON.stringify(body);
    return JSON.stringify({ ...body, seed: "\u0000seed" }).replace('"\\u0000seed"', seed.replace(/^0+(?=\d)/, ""));
  }

  function setGenerating(on) {
    $("generate-submit").disabled = on;
    $("generate-submit").setAttribute("aria-busy", on ? "true" : "false");
    $("generate-stop-btn").disabled = !on;
    $("generate-again").disabled = on || !gen.last;
  }

  function parseEvent(raw) {
    let event = "message";
    const data = [];
    for (const line of raw.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    return { event, data: data.join("\n") };
  }

  async function runGeneration(request) {
    clearError();
    const out = $("generate-output");
    const stats = $("generate-stats");
    out.replaceChildren();
    $("generate-prompt-echo").textContent = request.body.prompt;
    stats.textContent = "Generating…";
    const ctrl = new AbortController();
    gen.abort = ctrl;
    setGenerating(true);
    const started = performance.now();
    let received = 0;
    let final = null;
    let finalSeed = "";
    try {
      const resp = await api("/generate", { method: "POST", body: requestJson(request), signal: ctrl.signal });
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const { event, data } = parseEvent(buf.slice(0, cut));
          buf = buf.slice(cut + 2);
          if (!data) continue;
          const obj = JSON.parse(data);
          if (event === "error") {
            const e = obj.error || {};
            throw new ApiProblem(`Generation failed: ${e.message || "unknown error"}`, e.status || 0, e.code);
          }
          if (obj.text) {
            out.append(obj.text);
            received += [...obj.text].length;
          }
          if (obj.finish_reason) {
            final = obj;
            const m = /"seed"\s*:\s*(\d+)/.exec(data);  // the exact digits, however large
            finalSeed = m ? m[1] : String(obj.seed);
          }
        }
      }
      if (!final) throw new ApiProblem("The stream ended before its last event: the server closed it.");
      const perChar = final.time_per_char_ms;
      const wall = (performance.now() - started) / 1000;
      const rate = perChar > 0 ? 1000 / perChar : final.generated_chars / Math.max(wall, 1e-3);
      stats.replaceChildren(
        `Finished (${final.finish_reason}): ${final.generated_chars} characters · ` +
        `first character after ${fmt(final.time_to_first_char_ms, 1)} ms · ` +
        `${rate.toFixed(0)} chars/s · seed ${finalSeed}` +
        (final.model ? ` · ${final.model}` : "") +
        (final.unknown_prompt_chars ? ` · ${final.unknown_prompt_chars} prompt characters unknown to the model` : ""));
      gen.last = { body: request.body, seed: finalSeed };
    } catch (err) {
      if (err && err.name === "AbortError") {
        stats.textContent = `Stopped after ${received} characters (${((performance.now() - started) / 1000).toFixed(1)} s).`;
      } else {
        stats.textContent = "";
        report(err);
      }
    } finally {
      gen.abort = null;
      setGenerating(false);
    }
  }

  $("generate-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (gen.abort) return;
    let request;
    try {
      request = readGenerateForm();
    } catch (err) {
      report(err);
      return;
    }
    runGeneration(request);
  });

  $("generate-stop-btn").addEventListener("click", () => {
    // Aborting the fetch closes the connection; the server frees the stream's slot.
    if (gen.abort) gen.abort.abort();
    $("generate-submit").focus();
  });

  $("generate-again").addEventListener("click", () => {
    if (!gen.last || gen.abort) return;
    $("generate-seed").value = gen.last.seed;
    runGeneration({ body: gen.last.body, seed: gen.last.seed });
  });

  // ---------------------------------------------------------------- 4. models
  function providerName(p) {
    if (!p) return "—";
    if (/cuda/i.test(p)) return "CUDA";
    if (/cpu/i.test(p)) return "CPU";
    return p;
  }

  function cellOf(m) {
    if (m.cell) return m.cell;
    const hit = /\b(bi)?(LSTM|GRU|RNN)\b/i.exec(m.architecture || "");
    return hit ? hit[0] : "—";
  }

  function kvTable(caption, obj) {
    const entries = Object.entries(obj || {});
    if (!entries.length) return el("p", { class: "muted" }, `${caption}: none`);
    return el("div", { class: "scroll" }, el("table", { class: "data" },
      el("caption", {}, caption),
      el("tbody", {}, ...entries.map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, k),
        el("td", {}, fmtValue(v)))))));
  }

  function modelCard(m) {
    const name = m.name || m.id || "model";
    const dl = el("dl", {});
    const add = (k, v) => dl.append(el("dt", {}, k), el("dd", {}, v));
    add("Version", m.version || "—");
    add("Task", m.task || "—");
    add("Cell", cellOf(m));
    add("Architecture", m.architecture || "—");
    add("Parameters", fmtValue(m.parameters));
    add("Provider", `${providerName(m.provider)}${m.provider ? ` (${m.provider})` : ""}`);
    add("Ready", m.ready === undefined ? "—" : m.ready ? "yes" : "no");
    return el("article", { class: "card", dataset: { testid: "model-card", model: name } },
      el("h3", {}, name, " ", el("span", { class: "badge" }, providerName(m.provider))),
      dl, kvTable("Metrics", m.metrics), kvTable("Export checks", m.export_checks));
  }

  // The playground's model choice: shown when more than one generator is loaded; the
  // first listed is the server's default (a request without `model` gets it).
  function fillGeneratorChoice(generators) {
    const select = $("generate-model");
    const keep = select.value;
    select.replaceChildren(...generators.map((m, i) => {
      const name = m.name || m.id;
      const loss = m.metrics && m.metrics.heldout_loss_nats_per_char;
      return el("option", { value: name },
        `${name}${i === 0 ? " (default)" : ""}${loss ? ` · ${loss} nats/char` : ""}`);
    }));
    if (generators.some((m) => (m.name || m.id) === keep)) select.value = keep;
    $("generate-model-field").hidden = generators.length < 2;
  }

  // The classifier choice (sentiment and batch): shown when more than one is loaded.
  function fillClassifierChoice(classifiers) {
    const select = $("classify-model");
    const keep = select.value;
    select.replaceChildren(el("option", { value: "" }, "the server's default"),
      ...classifiers.map((m) => el("option", { value: m.name || m.id }, m.name || m.id)));
    if (classifiers.some((m) => (m.name || m.id) === keep)) select.value = keep;
    $("classify-model-field").hidden = classifiers.length < 2;
  }

  async function loadModels() {
    const box = $("model-cards");
    try {
      const resp = await api("/v1/models");  // with the key: SEQSERVE_PROTECT_OPS may ask for it
      const data = await resp.json();
      // the OpenAI list shape keeps the entries in `data`; older servers in `models`
      const list = Array.isArray(data.data) ? data.data : Array.isArray(data.models) ? data.models : [];
      box.replaceChildren(...(list.length ? list.map(modelCard) : [el("p", { class: "muted" }, "No models loaded.")]));
      fillGeneratorChoice(list.filter((m) => m.task === "text-generation"));
      fillClassifierChoice(list.filter((m) => m.task === "text-classification"));
    } catch (err) {
      if (err instanceof ApiProblem && err.status === 401) {
        // the key form is showing already; a banner on page load would only repeat it
        box.replaceChildren(el("p", { class: "muted" }, "Enter the API key above to see the models."));
        return;
      }
      box.replaceChildren(el("p", { class: "muted" }, "Could not load the models."));
      report(err);
    }
  }

  // ---------------------------------------------------------------- 5. live
  let liveTimer = null;

  async function refreshLive() {
    if (document.hidden || !$("live-on").checked) return;
    try {
      const resp = await api("/v1/stats");
      const s = await resp.json();
      $("live-caption").textContent = `Requests per route over the last ${Math.round(s.window_s)} s`;
      const tbody = $("live-table").tBodies[0];
      const rows = s.routes.map((r) => el("tr", {},
        el("td", { class: "nowrap" }, r.route), el("td", {}, r.method),
        el("td", { class: "num" }, r.rate_per_s.toFixed(2)),
        el("td", { class: "num" }, String(r.requests)),
        el("td", { class: "num" }, fmt(r.p50_ms, 1)),
        el("td", { class: "num" }, fmt(r.p99_ms, 1)),
        el("td", { class: "num" }, String(r.errors_5xx))));
      tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colSpan: 7 }, "No requests yet."))]));
      $("live-meta").textContent =
        `${s.in_flight} in flight · ${s.active_streams} active streams · updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      $("live-meta").textContent = err instanceof ApiProblem ? `Not updated: ${err.message}` : "Not updated.";
    }
  }

  function startLive() {
    clearInterval(liveTimer);
    liveTimer = setInterval(refreshLive, 5000);
    refreshLive();
  }

  $("live-on").addEventListener("change", () => { if ($("live-on").checked) refreshLive(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshLive(); });

  // ---------------------------------------------------------------- start
  $("error-close").addEventListener("click", clearError);

  async function start() {
    try {
      const resp = await api("/web/config", { auth: false });
      Object.assign(config, await resp.json());
      if (config.api_key_required && !storedKey()) showKeyForm();
    } catch (err) {
      report(err);
    }
    loadModels();
    startLive();
  }

  start();
})();
