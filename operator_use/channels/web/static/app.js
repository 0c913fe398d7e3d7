// The web chat page. The agent's text is untrusted (a page it read may have told it what to write): it is
// rendered by markdown-it with raw HTML disabled, which escapes every character of it and refuses
// javascript:/vbscript:/file:/data: links; that output is the only markup ever inserted. What the user
// typed and errors are shown as text. The page's CSP allows no inline script and no remote image either.
// Voice notes: the mic button records with MediaRecorder and sends the recording as one base64 frame; the
// agent's spoken replies arrive as base64 OGG/Opus and play from blob: URLs (the only media the CSP allows).
//
// The socket's first event on every connection is
//   {"type": "hello", "model": "openai/gpt-4o" | null, "stt": true | false,
//    "max_message_bytes": n, "max_audio_bytes": n}
// model: the label of the agent's model (the empty state shows it); stt: whether voice notes can be
// transcribed (without it the mic button is disabled, its tooltip says why). The page keeps both on
// <html data-model data-stt> and dispatches a "opu:hello" DOM event (detail: the hello event) on document.
// Other events: history, clear (after /new: empty the view), send (with buttons?: [{label, command,
// style}] rendered under the message; a click sends the command as a message; after the history, the
// messages whose buttons are still open come again as send events), close_buttons {id, text} (the request
// was answered, expired or cancelled: its buttons are disabled in every tab, the text with the outcome under
// it replaces the message's), edit, finalize, user, voice, typing, error. A close with code 4401 means the
// page's token is stale: it stops reconnecting.
"use strict";
(() => {
  const log = document.getElementById("log");
  const input = document.getElementById("input");
  const form = document.getElementById("composer");
  const statusEl = document.getElementById("status");
  const typingEl = document.getElementById("typing");
  const mic = document.getElementById("mic");
  const stopButton = document.getElementById("stop");
  const newChatButton = document.getElementById("new-chat");
  const encoder = new TextEncoder();
  const bubbles = new Map(); // message id -> element of the agent's messages
  let ws = null;
  let failures = 0;
  let maxBytes = 65536; // replaced by the server's limit on connect
  let maxAudioBytes = 4 * 1024 * 1024; // likewise
  let recorder = null;
  let unsentNote = null; // a voice note recorded while disconnected: sent on reconnect, not lost
  let typingTimer = null;
  let stale = false; // the server refused our token (close code 4401): no more reconnecting
  const STALE_CLOSE = 4401;

  function setStatus(text, state, detail) {
    statusEl.textContent = text;
    statusEl.title = detail || text; // the whole sentence, when a phone's header cuts the text short
    statusEl.dataset.state = state;
  }

  function nearBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 120;
  }

  function toBottom() {
    log.scrollTop = log.scrollHeight;
  }

  function bubble(role, id) {
    const el = document.createElement("div");
    el.className = "msg " + role;
    if (id) el.dataset.id = id;
    const body = document.createElement("div");
    body.className = "body";
    el.appendChild(body);
    log.appendChild(el);
    return el;
  }

  function showText(el, text) {
    el.querySelector(".body").textContent = text;
  }

  // The markdown is render.js's (window.OperatorRender): incremental while a reply streams, at most one
  // render per frame, code highlighted once its block is finished. `after` runs once the text is shown.
  function showMarkdown(el, text, plain, final = false, after = null) {
    const body = el.querySelector(".body");
    const render = window.OperatorRender;
    if (plain || !render) {
      if (render) render.plain(body, text);
      else {
        body.textContent = text;
        body.classList.add("plain");
      }
      if (after) after();
    } else if (final) {
      render.update(body, text, true);
      if (after) after();
    } else {
      render.schedule(body, text, false, after);
    }
  }

  // The message is complete: its last blocks get their highlighting.
  function finishMarkdown(el) {
    if (window.OperatorRender) window.OperatorRender.finish(el.querySelector(".body"));
  }

  function agentBubble(id) {
    let el = bubbles.get(id);
    if (!el) {
      el = bubble("assistant streaming", id);
      bubbles.set(id, el);
    }
    return el;
  }

  function showTyping(on) {
    clearTimeout(typingTimer);
    typingEl.hidden = !on;
    // The gateway refreshes typing every few seconds while the agent works; silence means it stopped.
    if (on) typingTimer = setTimeout(() => { typingEl.hidden = true; }, 6000);
  }

  function showError(text) {
    const stick = nearBottom();
    const el = bubble("error");
    el.setAttribute("role", "alert");
    showText(el, text);
    if (stick) toBottom();
  }

  function clearView() {
    for (const audio of log.querySelectorAll("audio")) URL.revokeObjectURL(audio.src);
    log.replaceChildren();
    bubbles.clear();
    showTyping(false);
  }

  // Buttons under a message (approval requests): a click sends the command as if the user typed it, so
  // the server checks it like any message; the row is disabled at once, so a request is answered once.
  function addButtons(el, buttons) {
    const row = document.createElement("div");
    row.className = "buttons";
    for (const b of buttons) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "action " + (["primary", "danger", "secondary"].includes(b.style) ? b.style : "secondary");
      button.textContent = b.label;
      button.dataset.command = b.command;
      button.title = b.command;
      button.addEventListener("click", () => {
        if (!sendText(b.command)) return;
        for (const other of row.querySelectorAll("button")) other.disabled = true;
        button.classList.add("chosen");
      });
      row.appendChild(button);
    }
    el.appendChild(row);
  }

  const handlers = {
    hello(ev) {
      if (ev.max_message_bytes) maxBytes = ev.max_message_bytes;
      if (ev.max_audio_bytes) maxAudioBytes = ev.max_audio_bytes;
      document.documentElement.dataset.model = ev.model || "";
      document.documentElement.dataset.stt = ev.stt ? "on" : "off";
      if (!ev.stt && mic.dataset.reason !== "device") {
        if (recorder && recorder.state === "recording") recorder.stop();
        micUnavailable("Voice notes are off: speech-to-text is not set up (see voice.stt in config.yaml).", "stt");
      } else if (mic.dataset.reason === "stt") {
        mic.disabled = false; // speech-to-text is back after a restart
        mic.dataset.state = "idle";
        delete mic.dataset.reason;
        mic.title = "Record a voice note (click again to send it)";
      }
      document.dispatchEvent(new CustomEvent("opu:hello", { detail: ev }));
    },
    clear() { clearView(); },
    history(ev) {
      if (ev.max_message_bytes) maxBytes = ev.max_message_bytes;
      if (ev.max_audio_bytes) maxAudioBytes = ev.max_audio_bytes;
      clearView();
      for (const item of ev.items) {
        if (item.role === "user") showText(bubble("user"), item.text);
        else showMarkdown(bubble("assistant done"), item.text, false, true);
      }
      toBottom();
    },
    user(ev) {
      const el = bubble(ev.voice ? "user voice" : "user", ev.id);
      showText(el, ev.text);
      toBottom();
    },
    voice(ev) {
      const stick = nearBottom();
      const bytes = Uint8Array.from(atob(ev.data), (c) => c.charCodeAt(0));
      const audio = document.createElement("audio");
      audio.controls = true;
      audio.preload = "metadata";
      audio.src = URL.createObjectURL(new Blob([bytes], { type: ev.mime }));
      bubble("assistant voice done", ev.id).querySelector(".body").appendChild(audio);
      showTyping(false);
      if (stick) toBottom();
    },
    send(ev) {
      handlers.edit(ev);
      if (ev.buttons && ev.buttons.length) {
        const el = agentBubble(ev.id);
        addButtons(el, ev.buttons);
        finishMarkdown(el);
        el.classList.remove("streaming");
        el.classList.add("done"); // a message with buttons is whole: it is never edited
        bubbles.delete(ev.id);
      }
    },
    close_buttons(ev) {
      const el = Array.from(log.querySelectorAll(".msg.assistant")).find((m) => m.dataset.id === ev.id);
      if (!el) return; // not shown here (sent before a /new cleared the view)
      for (const button of el.querySelectorAll(".buttons button")) button.disabled = true;
      el.classList.add("closed");
      if (typeof ev.text === "string") showMarkdown(el, ev.text, false, true);
    },
    edit(ev) {
      const stick = nearBottom();
      showMarkdown(agentBubble(ev.id), ev.text, ev.plain, false, () => { if (stick) toBottom(); });
      showTyping(false);
    },
    finalize(ev) {
      const el = bubbles.get(ev.id);
      if (el) {
        finishMarkdown(el);
        el.classList.remove("streaming");
        el.classList.add("done");
        bubbles.delete(ev.id);
      }
      showTyping(false);
    },
    typing() {
      if (!log.querySelector(".streaming")) showTyping(true);
    },
    error(ev) { showError(ev.error); },
  };

  function connect() {
    setStatus(failures ? "reconnecting…" : "connecting…", "wait");
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws");
    ws = socket;
    socket.onopen = () => {
      failures = 0;
      setStatus("connected", "ok");
      if (unsentNote) {
        const note = unsentNote;
        unsentNote = null;
        sendNote(note);
      }
    };
    socket.onmessage = (e) => {
      let ev;
      try { ev = JSON.parse(e.data); } catch { return; }
      const handle = handlers[ev.type];
      if (handle) handle(ev);
    };
    socket.onclose = (e) => {
      if (ws !== socket) return;
      if (e.code === STALE_CLOSE) {
        // The agent's token changed (its token file was deleted, or another one configured): retrying
        // cannot help, only the new address can.
        stale = true;
        setStatus("token changed: open the new address", "stale",
          "This page's token is no longer valid: open the new address operator-use printed at start-up.");
        showError("Disconnected: the agent's token changed. Open the new address operator-use printed at start-up.");
        return;
      }
      failures += 1;
      // The token stays the same across restarts: the page waits for the agent to come back.
      setStatus("disconnected, retrying…", "bad");
      setTimeout(connect, Math.min(10000, 300 * 2 ** failures));
    };
  }

  // Sends a message (typed, or a button's command); false when it could not be sent (the reason shown).
  function sendText(text, kept = "") {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      showError(stale ? "Not connected: open the new address printed at start-up."
        : `Not connected${kept}; send it again once connected.`);
      return false;
    }
    const frame = JSON.stringify({ type: "message", text });
    const size = encoder.encode(frame).length;
    if (size > maxBytes) {
      showError(`The message is too long (${size} bytes; the limit is ${maxBytes})${kept}.`);
      return false;
    }
    ws.send(frame);
    return true;
  }

  function submit() {
    const text = input.value;
    if (!text.trim()) return;
    if (!sendText(text, ": the message was kept in the box")) return;
    input.value = "";
    autosize();
  }

  // --- voice notes ---

  // why: "stt" when the agent cannot transcribe (may change at the next hello), "device" for the browser.
  function micUnavailable(reason, why = "device") {
    mic.disabled = true;
    mic.dataset.state = "unavailable";
    mic.dataset.reason = why;
    mic.title = reason;
  }

  function recordingType() {
    for (const type of ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm", "audio/ogg"]) {
      if (MediaRecorder.isTypeSupported(type)) return type;
    }
    return ""; // the browser's default
  }

  function base64(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  }

  async function sendNote(blob) {
    if (!blob.size) {
      showError("The recording was empty: nothing was sent.");
      return;
    }
    if (blob.size > maxAudioBytes) {
      showError(`The voice note is too big (${blob.size} bytes; the limit is ${maxAudioBytes}).`);
      return;
    }
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      unsentNote = blob;
      showError("Not connected: the voice note will be sent once the connection is back.");
      return;
    }
    const data = await base64(blob);
    ws.send(JSON.stringify({ type: "audio", mime: blob.type || "audio/webm", data }));
  }

  function clock(ms) {
    const s = Math.floor(ms / 1000);
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  async function startRecording() {
    mic.dataset.state = "starting";
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (e) {
      micUnavailable(`Voice notes are unavailable: no microphone, or it was refused (${e.name}).`);
      return;
    }
    const mimeType = recordingType();
    let rec;
    try {
      rec = new MediaRecorder(stream, { mimeType, audioBitsPerSecond: 32000 });
    } catch (e) {
      for (const track of stream.getTracks()) track.stop();
      micUnavailable(`Voice notes are unavailable: this browser cannot record audio (${e.name}).`);
      return;
    }
    const chunks = [];
    let bytes = 0;
    const started = performance.now();
    const timer = setInterval(() => { mic.dataset.clock = clock(performance.now() - started); }, 250);
    // The data attributes let a test (or a curious user) see the recording progress.
    rec.ondataavailable = (e) => {
      if (e.data.size) {
        chunks.push(e.data);
        bytes += e.data.size;
      }
      mic.dataset.bytes = String(bytes);
      mic.dataset.elapsed = String(Math.round(performance.now() - started));
      if (bytes > maxAudioBytes * 0.95 && rec.state === "recording") rec.stop(); // stop before the limit
    };
    rec.onstop = () => {
      clearInterval(timer);
      for (const track of stream.getTracks()) track.stop();
      recorder = null;
      mic.dataset.state = "idle";
      mic.title = "Record a voice note (click again to send it)";
      sendNote(new Blob(chunks, { type: rec.mimeType || mimeType || "audio/webm" }))
        .catch((e) => showError(`The voice note could not be sent: ${e}`));
    };
    recorder = rec;
    mic.dataset.bytes = "0";
    mic.dataset.elapsed = "0";
    mic.dataset.clock = clock(0);
    rec.start(250); // a chunk every 250 ms: progress is visible and a long note is not one huge buffer
    mic.dataset.state = "recording";
    mic.title = "Recording: click to stop and send";
  }

  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.MediaRecorder) {
    micUnavailable("Voice notes need microphone access, which browsers give only on https or localhost.");
  } else if (navigator.permissions) {
    navigator.permissions.query({ name: "microphone" }).then((p) => {
      if (p.state === "denied") micUnavailable("Voice notes are unavailable: microphone access was denied.");
    }).catch(() => {}); // not every browser can query the microphone permission: the click will tell
  }
  mic.addEventListener("click", () => {
    if (recorder && recorder.state === "recording") recorder.stop();
    else if (!recorder && mic.dataset.state === "idle") startRecording();
  });

  function autosize() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight, 240) + "px";
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); submit(); });
  stopButton.addEventListener("click", () => { sendText("/stop"); });
  newChatButton.addEventListener("click", () => { sendText("/new"); });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  input.addEventListener("input", autosize);
  connect();
})();
