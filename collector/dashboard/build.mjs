// Builds dist/: app.js (src/main.ts bundled with uPlot: one minified IIFE, es2020, which
// defines no global), app.css (src/app.css with uPlot's CSS) and index.html (copied).
// Type-checks src/ with tsc --noEmit first. Fails when index.html + app.js + app.css are
// over BUDGET bytes gzipped. `--size` only prints the sizes of an existing build.
// `--outdir DIR` builds elsewhere: the build is deterministic, so tests rebuild into a
// temporary directory and compare it with the committed dist/.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

export const BUDGET = 150 * 1024;
export const FILES = ["index.html", "app.js", "app.css"];
const root = dirname(fileURLToPath(import.meta.url));
// dist/ is committed, so `tracklane up` serves the dashboard without node.
const at = process.argv.indexOf("--outdir");
const dist = at > 0 ? resolve(process.argv[at + 1]) : join(root, "dist");

export const gzSize = (file) => gzipSync(readFileSync(file)).length;

function report() {
  let total = 0;
  for (const f of FILES) {
    const n = gzSize(join(dist, f));
    total += n;
    console.log(`${f}: ${readFileSync(join(dist, f)).length} B, ${n} B gzipped`);
  }
  console.log(`total: ${total} B gzipped (budget ${BUDGET} B)`);
  if (total > BUDGET) {
    console.error(`the dashboard is ${total} B gzipped, over the ${BUDGET} B budget`);
    return false;
  }
  return true;
}

if (process.argv.includes("--size")) process.exit(report() ? 0 : 1);

execFileSync(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", join(root, "tsconfig.json"), "--noEmit"],
  { stdio: "inherit", cwd: root });

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
// uPlot's licence comment is not a legal comment to esbuild: keep its notice by hand.
const uplot = JSON.parse(readFileSync(join(root, "node_modules/uplot/package.json"), "utf8")).version;
const notice = `/*! Tracklane dashboard. Includes uPlot ${uplot} (c) Leon Sorokin, MIT License, https://github.com/leeoniya/uPlot */`;
const common = { bundle: true, minify: true, logLevel: "warning", legalComments: "eof", absWorkingDir: root };
await Promise.all([
  build({ ...common, entryPoints: [join(root, "src/main.ts")], format: "iife", target: "es2020", banner: { js: notice }, outfile: join(dist, "app.js") }),
  build({ ...common, entryPoints: [join(root, "src/app.css")], target: ["chrome100", "firefox100", "safari15"], outfile: join(dist, "app.css") }),
]);
copyFileSync(join(root, "index.html"), join(dist, "index.html"));

if (!report()) process.exit(1);
