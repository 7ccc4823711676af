// Sends made-up traffic to a running collector, to look at the dashboard by hand:
//   node e2e/seed.mjs http://127.0.0.1:8080 WRITE_KEY [persons=300] [days=14]
// Persons visit on random days (some come back), view pages from referrers and campaigns,
// and some add to cart and buy (EUR). A few events are sent "now" for the live panel.
const [base, writeKey, personsArg = "300", daysArg = "14"] = process.argv.slice(2);
if (!base || !writeKey) {
  console.error("usage: node e2e/seed.mjs BASE WRITE_KEY [persons] [days]");
  process.exit(2);
}
let seed = 42;
const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
const pick = (xs) => xs[Math.floor(rnd() * xs.length)];
const UAS = [
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
];
const PAGES = ["/", "/pricing", "/docs", "/blog/launch", "/blog/analytics", "/signup", "/product/a", "/product/b", "/cart"];
const SOURCES = [
  { ref: "https://www.google.com/" }, { ref: "https://news.ycombinator.com/" }, { ref: "" },
  { ref: "", utm: "utm_source=newsletter&utm_medium=email&utm_campaign=spring" },
  { ref: "https://twitter.com/", utm: "utm_source=twitter&utm_medium=social&utm_campaign=launch" },
];
const persons = Number(personsArg);
const days = Number(daysArg);
const now = Date.now();
const events = [];
let mid = 0;
const add = (e) => events.push({ messageId: `seed-${now}-${mid++}`, ...e });
for (let p = 0; p < persons; p++) {
  const anonymousId = `anon-${now}-${p}`;
  const ua = pick(UAS);
  let t = now - rnd() * days * 86_400_000;
  const visits = rnd() < 0.3 ? 1 + Math.floor(rnd() * 3) : 1;
  for (let v = 0; v < visits && t < now; v++) {
    const sessionId = `${anonymousId}-s${v}`;
    const src = pick(SOURCES);
    const n = 1 + Math.floor(rnd() * 4);
    for (let i = 0; i < n; i++) {
      const path = i === 0 ? pick(PAGES.slice(0, 5)) : pick(PAGES);
      const url = `https://shop.example${path}${i === 0 && src.utm ? `?${src.utm}` : ""}`;
      add({ type: "page", anonymousId, timestamp: new Date(t).toISOString(),
        context: { sessionId, userAgent: ua, page: { url, path, referrer: i === 0 ? src.ref : "https://shop.example/" } } });
      t += 20_000 + rnd() * 120_000;
    }
    if (rnd() < 0.35) {
      add({ type: "track", event: "add_to_cart", anonymousId, timestamp: new Date(t).toISOString(), context: { sessionId, userAgent: ua } });
      t += 30_000;
      if (rnd() < 0.5) {
        add({ type: "track", event: "purchase", anonymousId, timestamp: new Date(t).toISOString(),
          properties: { revenue: Math.round(1000 + rnd() * 9000) / 100, currency: "EUR" }, context: { sessionId, userAgent: ua } });
      }
    }
    t += (1 + rnd() * 3) * 86_400_000;
  }
}
for (let i = 0; i < 5; i++) {
  add({ type: "page", anonymousId: `live-${now}-${i}`, timestamp: new Date().toISOString(),
    context: { userAgent: UAS[0], page: { url: `https://shop.example${PAGES[i]}`, path: PAGES[i] } } });
}
const auth = `Basic ${Buffer.from(`${writeKey}:`).toString("base64")}`;
let accepted = 0;
for (let i = 0; i < events.length; i += 500) {
  const r = await fetch(`${base}/v1/batch`, { method: "POST", headers: { "Content-Type": "application/json", Authorization: auth },
    body: JSON.stringify({ batch: events.slice(i, i + 500) }) });
  const body = await r.json();
  if (!r.ok) throw new Error(`${r.status} ${JSON.stringify(body)}`);
  accepted += body.accepted;
  if (body.errors?.length) console.error(JSON.stringify(body.errors.slice(0, 3)));
}
console.log(`sent ${events.length} events, ${accepted} accepted`);
