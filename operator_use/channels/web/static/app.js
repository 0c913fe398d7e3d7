// The web chat page. The agent's text is untrusted (a page it read may have told it what to write): it is
// rendered by markdown-it with raw HTML disabled, which escapes every character of it and refuses
// javascript:/vbscript:/file:/data: links; that output is the only markup ever inserted. What the user
// typed and errors are shown as text. The page's CSP allows no inline script and no remote image either.
// Voice notes: the mic button records with MediaRecorder and sends the recording as one base64 frame; the
// agent's spoken replies arrive as base64 OGG/Opus and play from blob: URLs (the only media the CSP allows).
"use strict";
(() => {
  const md = window.markdownit
    ? window.markdownit("default", { html: false, linkify: false, typographer: false, breaks: true })
    : null;
  const log = document.getElementById("log");
  const input = document.getElementById("input");
  const form = document.getElementById("composer");
  const statusEl = document.getElementById("status");
  const typingEl = document.getElementById("typing");
  const mic = document.getElementById("mic");
  const encoder = new TextEncoder();
  const bubbles = new Map(); // message id -> element of the agent's messages
  let ws = null;
  let failures = 0;
  let maxBytes = 65536; // replaced by the server's limit on connect
  let maxAudioBytes = 4 * 1024 * 1024; // likewise
  let recorder = null;
  let unsentNote = null; // a voice note recorded while disconnected: sent on reconnect, not lost
  let typingTimer = null;

  function setStatus(text, state) {
    statusEl.textContent = text;
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

  function showMarkdown(el, text, plain) {
    const body = el.querySelector(".body");
    if (plain || !md) {
      body.textContent = text;
      body.classList.add("plain");
      return;
    }
    body.classList.remove("plain");
    body.innerHTML = md.render(text);
    for (const a of body.querySelectorAll("a")) {
      a.target = "_blank";
      a.rel = "noopener noreferrer";
    }
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
    showText(bubble("error"), text);
    if (stick) toBottom();
  }

  const handlers = {
    history(ev) {
      if (ev.max_message_bytes) maxBytes = ev.max_message_bytes;
      if (ev.max_audio_bytes) maxAudioBytes = ev.max_audio_bytes;
      for (const audio of log.querySelectorAll("audio")) URL.revokeObjectURL(audio.src);
      log.replaceChildren();
      bubbles.clear();
      for (const item of ev.items) {
        if (item.role === "user") showText(bubble("user"), item.text);
        else showMarkdown(bubble("assistant done"), item.text, false);
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
    send(ev) { handlers.edit(ev); },
    edit(ev) {
      const stick = nearBottom();
      showMarkdown(agentBubble(ev.id), ev.text, ev.plain);
      showTyping(false);
      if (stick) toBottom();
    },
    finalize(ev) {
      const el = bubbles.get(ev.id);
      if (el) {
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
    socket.onclose = () => {
      if (ws !== socket) return;
      failures += 1;
      // A restarted agent has a new token: after a few refusals, say where to find it.
      setStatus(failures > 3 ? "not connected: open the address operator-use printed at start-up"
        : "disconnected, retrying…", "bad");
      setTimeout(connect, Math.min(10000, 300 * 2 ** failures));
    };
  }

  function submit() {
    const text = input.value;
    if (!text.trim()) return;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      showError("Not connected: the message was kept in the box; send it again once connected.");
      return;
    }
    const frame = JSON.stringify({ type: "message", text });
    const size = encoder.encode(frame).length;
    if (size > maxBytes) {
      showError(`The message is too long (${size} bytes; the limit is ${maxBytes}). It was kept in the box.`);
      return;
    }
    ws.send(frame);
    input.value = "";
    autosize();
  }

  // --- voice notes ---

  function micUnavailable(reason) {
    mic.disabled = true;
    mic.dataset.state = "unavailable";
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
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  input.addEventListener("input", autosize);
  connect();
})();
