// Germany's sixteen states from @svg-maps/germany (served by Django from npm,
// never a CDN), coloured by a value per state, with a legend, a hover tip and
// a click callback. No I/O beyond loading the SVG once.
"use strict";

window.FogMap = (function () {
  const LOW = [219, 234, 254];   // the ramp's ends: light blue ...
  const HIGH = [30, 64, 175];    // ... to deep blue

  function colour(t) {
    const mix = LOW.map((low, i) => Math.round(low + (HIGH[i] - low) * t));
    return `rgb(${mix.join(",")})`;
  }

  function create(box, legend, tip, { describe, onChoose }) {
    let paths = {};
    let values = {};

    const ready = fetch(window.FOG_MAP_URL)
      .then((r) => { if (!r.ok) throw new Error(`map: HTTP ${r.status}`); return r.text(); })
      .then((text) => {
        const svg = new DOMParser().parseFromString(text, "image/svg+xml").documentElement;
        svg.setAttribute("role", "img");
        box.replaceChildren(svg);
        svg.querySelectorAll("path[id]").forEach((path) => {
          const state = path.id.toUpperCase();
          paths[state] = path;
          path.setAttribute("tabindex", "0");
          path.dataset.state = state;
          path.addEventListener("mousemove", (e) => showTip(state, e.clientX, e.clientY));
          path.addEventListener("mouseleave", () => { tip.hidden = true; });
          path.addEventListener("focus", () => {
            const r = path.getBoundingClientRect();
            showTip(state, r.left + r.width / 2, r.top + r.height / 2);
          });
          path.addEventListener("blur", () => { tip.hidden = true; });
          path.addEventListener("click", () => choose(state));
          path.addEventListener("keydown", (e) => { if (e.key === "Enter") choose(state); });
        });
        paint();
      })
      .catch((error) => { box.textContent = `The map could not be loaded (${error.message}).`; });

    function choose(state) {
      Object.values(paths).forEach((p) => p.classList.toggle("chosen", p.dataset.state === state));
      onChoose(state);
    }

    function showTip(state, x, y) {
      tip.textContent = describe(state);
      tip.hidden = false;
      tip.style.left = `${x + 14}px`;
      tip.style.top = `${y + 14}px`;
    }

    function paint() {
      const known = Object.values(values).filter((v) => v > 0);
      const lo = known.length ? Math.min(...known) : 0;
      const hi = known.length ? Math.max(...known) : 0;
      Object.entries(paths).forEach(([state, path]) => {
        const v = values[state] || 0;
        path.style.fill = v > 0 ? colour(hi > lo ? (v - lo) / (hi - lo) : 1) : "#e5e7eb";
        path.setAttribute("aria-label", describe(state).split("\n").join(", "));
      });
      legend.replaceChildren();
      if (!known.length) { legend.textContent = "no data yet"; return; }
      const ramp = document.createElement("span");
      ramp.className = "ramp";
      ramp.style.background = `linear-gradient(to right, ${colour(0)}, ${colour(1)})`;
      const low = document.createElement("span");
      low.textContent = `${lo.toFixed(0)} kWh`;
      const high = document.createElement("span");
      high.textContent = `${hi.toFixed(0)} kWh / year`;
      legend.append(low, ramp, high);
    }

    return {
      ready,
      update(next) { values = next; paint(); },
    };
  }

  return { create };
})();
