// Builds the hub's web UI with esbuild, offline: src/main.js (with its CSS and the world map
// data) into one minified ES module, written with the page as exactly
// src/edgefleet/hub/ui_assets/{index.html, app.js, app.css}. Run `node ui/build.mjs` from
// anywhere: paths are taken from this file's location.

import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const uiDir = dirname(fileURLToPath(import.meta.url));
const outDir = join(uiDir, "..", "src", "edgefleet", "hub", "ui_assets");

const result = await esbuild.build({
  absWorkingDir: uiDir,
  entryPoints: { app: join(uiDir, "src", "main.js") },
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022", "chrome109", "firefox115", "safari16"],
  minify: true,
  sourcemap: false,
  splitting: false,
  legalComments: "none",
  charset: "utf8",
  // The world map (world-atlas JSON) and the sample manifest are part of the bundle: the page
  // never fetches data from anywhere but the hub's API.
  loader: { ".json": "json", ".yaml": "text" },
  outdir: outDir,
  write: false,
  logLevel: "warning",
});

const wanted = new Set(["app.js", "app.css"]);
const files = new Map(result.outputFiles.map((file) => [relative(outDir, file.path), file.contents]));
const unexpected = [...files.keys()].filter((name) => !wanted.has(name));
const missing = [...wanted].filter((name) => !files.has(name));
if (unexpected.length > 0 || missing.length > 0) {
  throw new Error(`esbuild wrote ${[...files.keys()].join(", ")}; expected app.js and app.css`);
}

await mkdir(outDir, { recursive: true });
for (const [name, contents] of files) await writeFile(join(outDir, name), contents);
await writeFile(join(outDir, "index.html"), await readFile(join(uiDir, "src", "index.html")));

for (const name of ["index.html", ...wanted]) {
  const size = name === "index.html" ? (await readFile(join(outDir, name))).length : files.get(name).length;
  console.log(`${relative(process.cwd(), join(outDir, name)) || name}  ${(size / 1024).toFixed(1)} KiB`);
}
