// Live updates: the server sends `change` events (server-sent events) when the store
// may have changed; the page fetches itself again and swaps in its #live part. No
// framework, nothing from elsewhere: this file is the dashboard's only script.
(() => {
  "use strict";
  const dot = document.getElementById("live-dot");
  if (!document.querySelector("#live[data-live]") || !window.EventSource) return;
  let busy = false;
  let again = false;

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(location.href, {
        credentials: "same-origin",
        headers: { "X-Onceq-Live": "1" },
      });
      if (response.ok) {
        const fresh = new DOMParser()
          .parseFromString(await response.text(), "text/html")
          .getElementById("live");
        const current = document.getElementById("live");
        if (fresh && current) current.replaceChildren(...fresh.childNodes);
      }
    } catch (e) {
      // the next change event tries again
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }

  const events = new EventSource("/events");
  events.addEventListener("open", () => dot && dot.classList.add("on"));
  events.addEventListener("error", () => dot && dot.classList.remove("on"));
  events.addEventListener("change", refresh);
})();
