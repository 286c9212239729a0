// Two browser phones in headless Chromium (Debian's, fake media
// devices): SIP.js's SimpleUser on a page each, over WSS to WSS_URL.
// Carol calls dave, dave answers, the call is held HOLD_MS, carol hangs
// up. Prints one JSON line of what happened and exits 0 when all of it
// did.
//
// Environment: SIPKA_NODE_MODULES (sip.js and playwright-core), CHROMIUM,
// WSS_URL, SIP_DOMAIN, HOLD_MS.

import { createRequire } from 'node:module';
import { readFile } from 'node:fs/promises';

const mods = process.env.SIPKA_NODE_MODULES;
const require = createRequire(mods + '/');
const { chromium } = require('playwright-core');

const domain = process.env.SIP_DOMAIN;
const holdMs = Number(process.env.HOLD_MS || '0');
const result = { reconnects: 0, log: [] };
const note = (what) => result.log.push(`${(performance.now() / 1000).toFixed(1)}s ${what}`);

// The page: SIP.js as ES modules from the package, under a made-up origin
// the browser never resolves (the context answers it); https, so that
// the page is a secure context, where getUserMedia works.
const ORIGIN = 'https://phones.lab';
const PAGE = `<!doctype html><html><body><audio id="remote" autoplay></audio>
<script type="module">
import { Web } from '/sip.js/index.js';
window.makePhone = (user, server, domain) => {
  const events = [];
  const su = new Web.SimpleUser(server, {
    aor: 'sip:' + user + '@' + domain,
    media: { constraints: { audio: true, video: false }, remote: { audio: document.getElementById('remote') } },
    reconnectionAttempts: 0,
    userAgentOptions: {
      logLevel: 'error',
      // No STUN server is reachable from the lab: host candidates only.
      sessionDescriptionHandlerFactoryOptions: { peerConnectionConfiguration: { iceServers: [] } },
    },
    delegate: {
      onCallReceived: () => events.push('received'),
      onCallAnswered: () => events.push('answered'),
      onCallHangup: () => events.push('hangup'),
      onRegistered: () => events.push('registered'),
      onServerDisconnect: () => events.push('disconnected'),
    },
  });
  window.phone = { su, events };
  return su.connect().then(() => su.register());
};
window.phoneReady = true;
</script></body></html>`;

const fail = async (why) => {
  result.error = String(why);
  console.log(JSON.stringify(result));
  process.exit(1);
};
setTimeout(() => fail('timed out'), 60000 + holdMs).unref();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: [
    '--no-sandbox',
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    // The lab's certificate is self-signed.
    '--ignore-certificate-errors',
  ],
}).catch(fail);

async function phonePage(user) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  await context.route(`${ORIGIN}/**`, async (route) => {
    const path = new URL(route.request().url()).pathname;
    if (path === '/') {
      return route.fulfill({ contentType: 'text/html', body: PAGE });
    }
    if (path.startsWith('/sip.js/') && !path.includes('..')) {
      const body = await readFile(`${mods}/sip.js/lib/${path.slice('/sip.js/'.length)}`).catch(() => null);
      if (body) return route.fulfill({ contentType: 'text/javascript', body });
    }
    return route.fulfill({ status: 404, body: 'not here' });
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => note(`${user} page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') note(`${user} console: ${m.text()}`);
  });
  await page.goto(`${ORIGIN}/`);
  await page.waitForFunction(() => window.phoneReady === true, null, { timeout: 10000 });
  await page.evaluate(([u, s, d]) => window.makePhone(u, s, d), [user, process.env.WSS_URL, domain]);
  return page;
}

const events = (page) => page.evaluate(() => window.phone.events.slice());
const waitEvent = (page, ev, ms) =>
  page.waitForFunction((e) => window.phone.events.includes(e), ev, { timeout: ms });

try {
  const carol = await phonePage('carol');
  const dave = await phonePage('dave');
  await waitEvent(carol, 'registered', 10000);
  await waitEvent(dave, 'registered', 10000);
  note('both registered');
  await carol.evaluate((d) => window.phone.su.call('sip:dave@' + d), domain);
  await waitEvent(dave, 'received', 15000);
  note('dave rings');
  await dave.evaluate(() => window.phone.su.answer());
  await waitEvent(carol, 'answered', 15000);
  note('answered: INVITE, 200, ACK');
  await new Promise((r) => setTimeout(r, holdMs));
  note(`held ${holdMs} ms`);
  await carol.evaluate(() => window.phone.su.hangup());
  await waitEvent(dave, 'hangup', 10000);
  await waitEvent(carol, 'hangup', 10000);
  note('hung up: BYE, 200');
  result.carol = await events(carol);
  result.dave = await events(dave);
  result.reconnects = [...result.carol, ...result.dave].filter((e) => e === 'disconnected').length;
  result.ok = result.reconnects === 0;
} catch (e) {
  await fail(e);
}
console.log(JSON.stringify(result));
await browser.close();
process.exit(result.ok ? 0 : 1);
