// Builds dist/: tracklane.min.js (IIFE, global `tracklane`), tracklane.esm.js,
// outbound.min.js (IIFE), outbound.esm.js, webvitals.min.js (IIFE), webvitals.esm.js, *.d.ts (tsc), snippet.txt / snippet.mjs.
// Fails when the minified core is over the gzip budget. `--size` only prints sizes.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

export const BUDGET = 4096;
// The optional Web Vitals add-on's budget (gzipped).
export const VITALS_BUDGET = 1536;
const root = dirname(fileURLToPath(import.meta.url));
// dist/ is committed, so `tracklane up` serves the SDK without node; the tests build into
// another directory (--outdir) and check that the committed files are that build.
const at = process.argv.indexOf("--outdir");
const dist = at > 0 ? resolve(process.argv[at + 1]) : join(root, "dist");
const { version } = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));

export const gzSize = (file) => gzipSync(readFileSync(file)).length;

function report() {
  let ok = true;
  const budgets = { "tracklane.min.js": BUDGET, "webvitals.min.js": VITALS_BUDGET };
  for (const f of ["tracklane.min.js", "outbound.min.js", "webvitals.min.js"]) {
    const n = gzSize(join(dist, f));
    console.log(`${f}: ${readFileSync(join(dist, f)).length} B, ${n} B gzipped`);
    if (budgets[f] && n > budgets[f]) {
      console.error(`${f} is ${n} B gzipped, over the ${budgets[f]} B budget`);
      ok = false;
    }
  }
  return ok;
}

if (process.argv.includes("--size")) process.exit(report() ? 0 : 1);

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
const common = { bundle: true, target: "es2019", define: { __VERSION__: JSON.stringify(version) }, logLevel: "warning", legalComments: "none" };
const iife = (entry, outfile) =>
  build({ ...common, entryPoints: [join(root, "src", entry)], format: "iife", minify: true, outfile: join(dist, outfile) });

await Promise.all([
  iife("global.ts", "tracklane.min.js"),
  iife("outbound.global.ts", "outbound.min.js"),
  iife("webvitals.global.ts", "webvitals.min.js"),
  build({ ...common, entryPoints: [join(root, "src/core.ts")], format: "esm", outfile: join(dist, "tracklane.esm.js") }),
  build({ ...common, entryPoints: [join(root, "src/outbound.ts")], format: "esm", outfile: join(dist, "outbound.esm.js") }),
  build({ ...common, entryPoints: [join(root, "src/webvitals.ts")], format: "esm", outfile: join(dist, "webvitals.esm.js") }),
]);

execFileSync(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", join(root, "tsconfig.json"), "--emitDeclarationOnly", "--outDir", relative(root, dist) || "."], { stdio: "inherit", cwd: root });

const html = readFileSync(join(root, "snippet.html"), "utf8");
const snippet = html.split("<!-- tracklane:snippet:start -->")[1].split("<!-- tracklane:snippet:end -->")[0].trim() + "\n";
writeFileSync(join(dist, "snippet.txt"), snippet);
writeFileSync(join(dist, "snippet.mjs"), `export const SNIPPET = ${JSON.stringify(snippet)};\n`);

if (!report()) process.exit(1);
