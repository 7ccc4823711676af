// src/outbound.ts
function installOutbound(t, w = globalThis) {
  const f = (e) => {
    const a = e.target && e.target.closest && e.target.closest("a[href]");
    if (a && /^https?:$/.test(a.protocol) && a.host != w.location.host) {
      const x = t || w.tracklane;
      x && x.track("Outbound Link Clicked", { href: a.href, text: (a.textContent || "").trim().slice(0, 200), host: a.host });
    }
  };
  w.document.addEventListener("click", f, true);
  return () => w.document.removeEventListener("click", f, true);
}
export {
  installOutbound
};
