// Builds the web app the binary embeds: the meeting page (/meet), the admin console (/admin) and
// the landing page (/), into crates/convene/assets/app/. Run `npm ci && npm run build` in web/ and
// commit the output, so building the binary needs no Node.
//
// Scripts and styles get content-hashed names (served as immutable); the HTML pages name them.
// Every file is also written gzip-compressed (`.gz`, level 9) for the server to pick by
// Accept-Encoding. The output depends only on the sources and the locked packages: the directory
// is emptied first, esbuild's hashes follow the content, and gzip headers carry no time or name.
import { build } from 'esbuild';
import { gzipSync, constants } from 'node:zlib';
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const out = here('../crates/convene/assets/app/');

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const result = await build({
  entryPoints: { meeting: here('./src/meeting/main.tsx'), admin: here('./src/admin/main.tsx') },
  outdir: out,
  bundle: true,
  splitting: true,
  minify: true,
  format: 'esm',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  entryNames: '[name]-[hash]',
  chunkNames: 'chunk-[hash]',
  assetNames: '[name]-[hash]',
  jsx: 'automatic',
  define: { 'process.env.NODE_ENV': '"production"' },
  legalComments: 'eof',
  metafile: true,
  logLevel: 'warning',
});

// Each entry's script, its stylesheet and the chunks it imports (preloaded by the page).
const outputs = result.metafile.outputs;
function entry(name) {
  const [file, meta] = Object.entries(outputs).find(([, m]) => m.entryPoint && basename(m.entryPoint).startsWith('main.') && m.entryPoint.includes(`/${name}/`));
  const chunks = meta.imports.filter((i) => i.kind === 'import-statement').map((i) => basename(i.path));
  return { script: basename(file), style: meta.cssBundle ? basename(meta.cssBundle) : null, chunks };
}

function page(template, bundle) {
  let html = readFileSync(here(`./pages/${template}`), 'utf8');
  if (bundle) {
    const head = [
      bundle.style && `<link rel="stylesheet" href="/assets/${bundle.style}">`,
      ...bundle.chunks.map((c) => `<link rel="modulepreload" href="/assets/${c}">`),
      `<script type="module" src="/assets/${bundle.script}"></script>`,
    ].filter(Boolean);
    html = html.replace('<!--bundle-->', head.join('\n'));
  }
  writeFileSync(join(out, template), html);
}

page('meet.html', entry('meeting'));
page('admin.html', entry('admin'));
page('index.html', null);

// Precompressed copies, and the sizes the page pays.
const sizes = [];
for (const name of readdirSync(out).sort()) {
  const body = readFileSync(join(out, name));
  const gz = gzipSync(body, { level: constants.Z_BEST_COMPRESSION });
  writeFileSync(join(out, `${name}.gz`), gz);
  sizes.push([name, statSync(join(out, name)).size, gz.length]);
}
const meetingJs = entry('meeting');
const meetingFiles = new Set([meetingJs.script, meetingJs.style, ...meetingJs.chunks, 'meet.html']);
let total = 0;
for (const [name, raw, gz] of sizes) {
  if (meetingFiles.has(name)) total += gz;
  console.log(`${name.padEnd(32)} ${String(raw).padStart(9)} B  ${String(gz).padStart(8)} B gzip`);
}
console.log(`meeting page, gzip: ${total} B (${(total / 1024).toFixed(1)} KiB)`);
