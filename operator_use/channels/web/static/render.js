// How the page shows the agent's markdown: incrementally while it streams, highlighted and copyable when done.
//
// The text is untrusted (a page the agent read may have told it what to write). It is rendered by markdown-it
// with raw HTML off (every character of it escaped, javascript:/vbscript:/file:/data: links refused by
// validateLink); highlight.js output is escaped too. That is the only markup ever inserted.
//
// Streaming: every edit brings the whole text so far. Re-rendering all of it at each edit costs ~130 ms for a
// 100 KB reply, so the text is cut into finished blocks, rendered once and kept as DOM, and the live tail,
// re-rendered at each edit. A cut is made only where a full render would cut too: at a blank line outside a
// code fence, followed by a complete, unindented line that is not a list item (so a list, an indented
// continuation or a fence never spans it). Where that is unsure (a fence indented inside a list whose
// content is outdented), nothing more is cut; a reference definition ([x]: url) links text anywhere in the
// message, so its presence switches that message to whole renders. The final DOM equals a one-shot render.
"use strict";
(() => {
  const md = window.markdownit
    ? window.markdownit("default", { html: false, linkify: true, typographer: false, breaks: true })
    : null;
  if (md) {
    // Only links with a scheme: "main.py" or "notes.md" are file names, not Paraguayan or Moldovan sites.
    md.linkify.set({ fuzzyLink: false, fuzzyEmail: false });
    // Bare http(s) URLs only: "//host/x" (scheme-relative), ftp: and mailto: stay text. Explicit markdown
    // links ([text](url), <url>) are not linkify's and keep working.
    md.linkify.add("//", null).add("ftp:", null).add("mailto:", null);
    const defaultLinkOpen = md.renderer.rules.link_open
      || ((tokens, idx, options, env, self) => self.renderToken(tokens, idx, options));
    md.renderer.rules.link_open = (tokens, idx, options, env, self) => {
      tokens[idx].attrSet("target", "_blank");
      tokens[idx].attrSet("rel", "noopener noreferrer");
      return defaultLinkOpen(tokens, idx, options, env, self);
    };
  }
  const hljs = window.hljs || null;
  const MAX_HIGHLIGHT = 50000; // characters: a bigger block stays plain rather than freeze the page
  const states = new WeakMap(); // body element -> its incremental state

  // --- where a finished block ends ---

  // As markdown-it reads lines: only spaces and tabs are blank (a no-break space is text), and a fence's info
  // string may hold any character.
  const FENCE = /^( {0,3})(`{3,}|~{3,})([^]*)$/;
  const BLANK = /^[ \t]*$/;
  const LIST_ITEM = /^(?:[-+*]|\d{1,9}[.)])(?:[ \t]|$)/;

  function indentOf(line) {
    let n = 0;
    while (n < line.length && (line[n] === " " || line[n] === "\t")) n += 1;
    return n;
  }

  // The offset in `text` after which nothing can change what comes before it, or 0.
  function lastCut(text) {
    let cut = 0;
    let fence = null; // {char, len, indent} while inside a fenced block
    let blank = false; // the previous line was blank (outside a fence)
    let pos = 0;
    while (pos < text.length) {
      const end = text.indexOf("\n", pos);
      if (end < 0) break; // an unfinished line: "1" may yet become "1. item"
      const line = text.slice(pos, end);
      if (fence) {
        const m = FENCE.exec(line);
        if (fence.indent && !BLANK.test(line) && indentOf(line) < fence.indent) {
          // A line left of an indented fence: the end of the list item the fence was in (this line a new
          // block, even a new fence), or the fence's content or end. Unsure: no cut from here on.
          return cut;
        }
        if (m && m[2][0] === fence.char && m[2].length >= fence.len && BLANK.test(m[3])) fence = null;
        blank = false;
      } else if (BLANK.test(line)) {
        blank = true;
      } else {
        if (blank && pos > 0 && indentOf(line) === 0 && !LIST_ITEM.test(line)) cut = pos;
        blank = false;
        const m = FENCE.exec(line);
        if (m && !(m[2][0] === "`" && m[3].includes("`"))) {
          fence = { char: m[2][0], len: m[2].length, indent: m[1].length };
        }
      }
      pos = end + 1;
    }
    return cut;
  }

  // --- rendering ---

  // Markdown -> a fragment, and whether it defines a reference (which may link text elsewhere).
  function fragment(text) {
    const env = {};
    const template = document.createElement("template");
    template.innerHTML = md.renderer.render(md.parse(text, env), md.options, env);
    return { frag: template.content, refs: !!(env.references && Object.keys(env.references).length) };
  }

  function copyButton() {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy";
    button.title = "Copy the code";
    button.setAttribute("aria-label", "Copy the code"); // the visible label is CSS: not part of the text
    return button;
  }

  // Code blocks get a copy button, and, when finished, highlighting (their language named and known).
  function decorate(root, finished) {
    for (const pre of root.querySelectorAll("pre")) {
      const code = pre.firstElementChild;
      if (!code || code.tagName !== "CODE") continue;
      if (finished && hljs) {
        const lang = /(?:^|\s)language-(\S+)/.exec(code.className);
        const source = code.textContent;
        if (lang && hljs.getLanguage(lang[1]) && source.length <= MAX_HIGHLIGHT) {
          try {
            code.innerHTML = hljs.highlight(source, { language: lang[1], ignoreIllegals: true }).value;
            code.classList.add("hljs");
          } catch (e) {
            console.warn("highlighting failed; the block stays plain", e); // the text is shown all the same
          }
        }
      }
      const box = document.createElement("div");
      box.className = "codebox";
      pre.replaceWith(box);
      box.append(pre, copyButton());
    }
  }

  function renderAll(body, text, final) {
    body.classList.remove("plain");
    const { frag } = fragment(text);
    decorate(frag, final);
    body.replaceChildren(frag);
  }

  function fresh() {
    // committed: the text rendered for good; guard: it and the line after it, which made the cut safe.
    return { text: "", committed: "", guard: "", tail: [], tailText: null, tailFinal: false, whole: false };
  }

  // Render `text` (the whole message so far) into `body` now. `final`: the message is complete.
  function update(body, text, final) {
    if (text.includes("\r")) text = text.replace(/\r\n?/g, "\n"); // markdown-it's line ends, for the cuts
    if (!md) {
      showPlain(body, text);
      return;
    }
    let st = states.get(body);
    if (!st || !text.startsWith(st.guard) || body.classList.contains("plain")) {
      st = fresh();
      states.set(body, st);
      body.replaceChildren();
    }
    body.classList.remove("plain");
    st.text = text;
    if (st.whole) {
      renderAll(body, text, final);
      return;
    }
    const rest = text.slice(st.committed.length);
    const cut = lastCut(rest);
    const tailText = rest.slice(cut);
    if (!cut && tailText === st.tailText && final === st.tailFinal) return;
    for (const node of st.tail) node.remove();
    st.tail = [];
    if (cut) {
      const done = fragment(rest.slice(0, cut));
      if (done.refs) return toWhole(body, st, text, final);
      decorate(done.frag, true);
      body.append(done.frag);
      st.committed = text.slice(0, st.committed.length + cut);
      st.guard = text.slice(0, text.indexOf("\n", st.committed.length) + 1);
    }
    const live = fragment(tailText);
    if (live.refs) return toWhole(body, st, text, final);
    decorate(live.frag, final);
    st.tail = Array.from(live.frag.childNodes);
    st.tailText = tailText;
    st.tailFinal = final;
    body.append(live.frag);
  }

  function toWhole(body, st, text, final) {
    st.whole = true;
    renderAll(body, text, final);
  }

  function showPlain(body, text) {
    states.delete(body);
    body.textContent = text;
    body.classList.add("plain");
  }

  // --- batching: at most one render per element per frame; the last text wins ---

  const pending = new Map(); // body -> [text, final, after]
  let frame = 0;
  let timer = 0;

  function flush() {
    cancelAnimationFrame(frame);
    clearTimeout(timer);
    frame = 0;
    timer = 0;
    const jobs = Array.from(pending);
    pending.clear();
    for (const [body, [text, final, after]] of jobs) {
      api.update(body, text, final);
      if (after) after();
    }
  }

  // `after` (optional) runs once the text is shown (e.g. to keep the view scrolled to the bottom).
  function schedule(body, text, final, after) {
    pending.set(body, [text, final, after]);
    if (final) {
      flush(); // a complete message is shown at once (and in order with what follows it)
      return;
    }
    if (!frame) {
      frame = requestAnimationFrame(flush);
      timer = setTimeout(flush, 100); // a hidden tab gets no frames: it still catches up
    }
  }

  // The message is complete: render what it has (highlighting its last blocks).
  function finish(body) {
    const job = pending.get(body);
    if (job) {
      schedule(body, job[0], true, job[2]);
      return;
    }
    const st = states.get(body);
    if (st && !body.classList.contains("plain")) api.update(body, st.text, true);
  }

  function plain(body, text) {
    pending.delete(body);
    showPlain(body, text);
  }

  // --- copy buttons (one listener for every code block, present and future) ---

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        return;
      } catch {
        // denied (e.g. the document lost focus): try the old way below
      }
    }
    // Plain http from another machine is no secure context: no clipboard API there.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.cssText = "position:fixed;top:0;left:0;opacity:0;pointer-events:none";
    const focused = document.activeElement;
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } finally {
      area.remove();
      if (focused && focused.focus) focused.focus();
    }
    if (!ok) throw new Error("copy refused");
  }

  document.addEventListener("click", (e) => {
    const button = e.target.closest && e.target.closest("button.copy");
    if (!button) return;
    const code = button.parentElement.querySelector("code");
    if (!code) return;
    const text = code.textContent.replace(/\n$/, ""); // markdown-it ends every block with a newline
    copyText(text).then(
      () => { button.dataset.state = "copied"; },
      () => { button.dataset.state = "failed"; },
    ).finally(() => {
      clearTimeout(button._reset);
      button._reset = setTimeout(() => { delete button.dataset.state; }, 1500);
    });
  });

  // --- the page around the messages ---

  // The hello event: the empty conversation says which model answers (and whether voice notes work).
  function hello(ev) {
    const log = document.getElementById("log");
    if (!log) return;
    const lines = [];
    if (ev.model) lines.push(`Chatting with ${ev.model}`);
    const mic = document.getElementById("mic");
    const voice = ev.stt && !(mic && mic.disabled);
    lines.push(voice ? "Type a message or record a voice note." : "Type a message to start.");
    lines.push("/help lists the commands."); // (the phone's short placeholder leaves this out)
    log.dataset.empty = lines.join("\n"); // shown by CSS while the log is empty (as text, never markup)
  }
  document.addEventListener("opu:hello", (e) => hello(e.detail || {})); // app.js's hello event

  // A phone's input is narrow: its placeholder is short.
  const input = document.getElementById("input");
  if (input && window.matchMedia) {
    const wide = input.getAttribute("placeholder") || "";
    const narrow = window.matchMedia("(max-width: 600px)");
    const place = () => { input.placeholder = narrow.matches ? "Message" : wide; };
    place();
    narrow.addEventListener("change", place);
  }

  const api = { update, schedule, finish, plain, renderAll, hello, lastCut };
  window.OperatorRender = api;
})();
