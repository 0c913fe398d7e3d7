// The web chat page. The agent's text is untrusted (a page it read may have told it what to write): it is
// rendered by markdown-it with raw HTML disabled, which escapes every character of it and refuses
// javascript:/vbscript:/file:/data: links; that output is the only markup ever inserted. What the user
// typed and errors are shown as text. The page's CSP allows no inline script and no remote image either.
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
  const encoder = new TextEncoder();
  const bubbles = new Map(); // message id -> element of the agent's messages
  let ws = null;
  let failures = 0;
  let maxBytes = 65536; // replaced by the server's limit on connect
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
      log.replaceChildren();
      bubbles.clear();
      for (const item of ev.items) {
        if (item.role === "user") showText(bubble("user"), item.text);
        else showMarkdown(bubble("assistant done"), item.text, false);
      }
      toBottom();
    },
    user(ev) {
      showText(bubble("user", ev.id), ev.text);
      toBottom();
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
