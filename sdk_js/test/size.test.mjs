// Runs the real build (which itself fails over budget) and checks the gzipped core size.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { root } from "./helpers.mjs";
import { gzipSync } from "node:zlib";
import { readFileSync } from "node:fs";

test("build: core is <= 4096 bytes gzipped (default and best compression)", () => {
  const out = mkdtempSync(join(tmpdir(), "tracklane-sdk-"));
  execFileSync(process.execPath, [join(root, "build.mjs"), "--outdir", out], { cwd: root, stdio: "pipe" });
  for (const f of ["tracklane.min.js", "tracklane.esm.js", "outbound.min.js", "webvitals.min.js", "core.d.ts", "outbound.d.ts", "webvitals.d.ts", "snippet.txt"])
    assert.ok(existsSync(join(out, f)), f);
  const core = readFileSync(join(out, "tracklane.min.js"));
  // Servers usually gzip at the default level, so that is the size the budget holds.
  const size = gzipSync(core).length;
  const best = gzipSync(core, { level: 9 }).length;
  console.log(`tracklane.min.js: ${core.length} bytes, ${size} bytes gzipped (${best} at level 9; budget 4096)`);
  assert.ok(size <= 4096, `${size} > 4096`);
  assert.ok(!core.toString().includes("installOutbound"), "outbound not in core");
  assert.ok(!core.toString().includes("PerformanceObserver"), "web vitals not in core");
  // The optional Web Vitals add-on: at most 1.5 KB gzipped.
  const vitals = gzipSync(readFileSync(join(out, "webvitals.min.js"))).length;
  console.log(`webvitals.min.js: ${vitals} bytes gzipped (budget 1536)`);
  assert.ok(vitals <= 1536, `${vitals} > 1536`);
  rmSync(out, { recursive: true });
});
