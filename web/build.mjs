// Bundles livekit-client and the page into one minified file the binary embeds:
// crates/convene/assets/meeting.js. Run `npm ci && npm run build` in web/ and commit the output.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';

const out = fileURLToPath(new URL('../crates/convene/assets/meeting.js', import.meta.url));
await build({
  entryPoints: [fileURLToPath(new URL('./src/meeting.js', import.meta.url))],
  outfile: out,
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020'],
  legalComments: 'eof',
  logLevel: 'info',
});
