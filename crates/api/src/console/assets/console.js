// hostplane console: follows a deployment's logs while "Follow" is checked. Lines are
// added with textContent, never as HTML.
"use strict";

(function () {
  const box = document.getElementById("log-lines");
  const follow = document.getElementById("follow");
  if (!box || !follow) return;
  let timer = null;
  let busy = false;

  function line(l) {
    const row = document.createElement("div");
    row.className = "line " + String(l.level).toLowerCase();
    const at = document.createElement("time");
    at.textContent = l.at;
    const level = document.createElement("span");
    level.className = "level";
    level.textContent = l.level;
    const message = document.createElement("span");
    message.className = "message";
    message.textContent = l.message;
    row.append(at, " ", level, " ", message);
    return row;
  }

  async function poll() {
    if (busy) return;
    busy = true;
    try {
      const url = box.dataset.source + "&after=" + encodeURIComponent(box.dataset.after || "");
      const res = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (res.redirected || !res.ok) return;
      const page = await res.json();
      if (page.lines.length > 0) {
        const empty = document.getElementById("no-lines");
        if (empty) empty.remove();
        const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
        for (const l of page.lines) box.append(line(l));
        if (atEnd) box.scrollTop = box.scrollHeight;
      }
      if (page.after) box.dataset.after = page.after;
    } catch (e) {
      // The next tick tries again.
    } finally {
      busy = false;
    }
  }

  function set(on) {
    if (timer) clearInterval(timer);
    timer = null;
    if (on) {
      poll();
      timer = setInterval(poll, 1000);
    }
  }

  follow.addEventListener("change", () => set(follow.checked));
  box.scrollTop = box.scrollHeight;
})();
