// Two browser-phone stacks in Node, through the sip-ka edge to a
// registrar: SIP.js over one WebSocket URL, JsSIP over the other. Both
// register; SIP.js sends JsSIP a MESSAGE and JsSIP answers with one.
// Prints one JSON line of what happened and exits 0 when all of it did.
//
// Environment: SIPKA_NODE_MODULES (where `cargo xtask setup` installed
// sip.js, jssip and ws), SIPJS_URL, JSSIP_URL (ws:// or wss://),
// SIP_DOMAIN, HOLD_MS (how long both stay registered before the
// messages, so the edge's Pings and SIP.js's CRLF keep-alives run).

import { createRequire } from 'node:module';

const mods = process.env.SIPKA_NODE_MODULES;
const require = createRequire(mods + '/');
// Both stacks open `new WebSocket(url, 'sip')`, as in a browser.
globalThis.WebSocket = require('ws');
const JsSIP = require('jssip');
const SIP = await import(mods + '/sip.js/lib/index.js');

const domain = process.env.SIP_DOMAIN;
const holdMs = Number(process.env.HOLD_MS || '0');
const result = { sipjs: {}, jssip: {} };
const fail = (why) => {
  result.error = String(why);
  console.log(JSON.stringify(result));
  process.exit(1);
};
setTimeout(() => fail('timed out'), 30000 + holdMs).unref();

const sipjsGot = new Promise((resolve) => {
  result.sipjs.resolve = resolve;
});
const jssipGot = new Promise((resolve) => {
  result.jssip.resolve = resolve;
});

// SIP.js, with its CRLF keep-alive every second.
const alice = new SIP.UserAgent({
  uri: SIP.UserAgent.makeURI(`sip:alice@${domain}`),
  transportOptions: { server: process.env.SIPJS_URL, keepAliveInterval: 1 },
  logLevel: 'error',
  delegate: {
    onMessage: (m) => {
      result.sipjs.received = m.request.body;
      m.accept();
      result.sipjs.resolve();
    },
  },
});
await alice.start().catch(fail);
const aliceReg = new SIP.Registerer(alice, { expires: 600 });
const aliceRegistered = new Promise((resolve, reject) => {
  aliceReg.stateChange.addListener((s) => {
    if (s === SIP.RegistererState.Registered) resolve();
  });
  aliceReg.register({
    requestDelegate: {
      onReject: (r) => reject(new Error(`SIP.js REGISTER: ${r.message.statusCode}`)),
    },
  });
});

// JsSIP, which sends no keep-alive of its own.
const socket = new JsSIP.WebSocketInterface(process.env.JSSIP_URL);
const bob = new JsSIP.UA({
  sockets: [socket],
  uri: `sip:bob@${domain}`,
  register: true,
  register_expires: 600,
  session_timers: false,
});
result.jssip.disconnects = 0;
bob.on('disconnected', () => {
  result.jssip.disconnects += 1;
});
const bobRegistered = new Promise((resolve, reject) => {
  bob.on('registered', resolve);
  bob.on('registrationFailed', (e) => reject(new Error(`JsSIP REGISTER: ${e.cause}`)));
});
bob.on('newMessage', (e) => {
  if (e.originator !== 'remote') return;
  result.jssip.received = e.request.body;
  result.jssip.resolve();
});
bob.start();

await Promise.all([aliceRegistered, bobRegistered]).catch(fail);
result.registered = true;
await new Promise((r) => setTimeout(r, holdMs));

// SIP.js -> JsSIP: its MESSAGE goes to the registrar, which finds bob by
// the Path the edge put on his REGISTER and sends it back through the
// edge, over bob's WebSocket.
const messager = new SIP.Messager(alice, SIP.UserAgent.makeURI(`sip:bob@${domain}`), 'hello bob');
const sent = new Promise((resolve, reject) => {
  messager.message({
    requestDelegate: {
      onAccept: resolve,
      onReject: (r) => reject(new Error(`MESSAGE to bob: ${r.message.statusCode}`)),
    },
  });
});
await Promise.all([sent, jssipGot]).catch(fail);

// JsSIP -> SIP.js.
await new Promise((resolve, reject) => {
  bob.sendMessage(`sip:alice@${domain}`, 'hello alice', {
    eventHandlers: {
      succeeded: resolve,
      failed: (e) => reject(new Error(`MESSAGE to alice: ${e.cause}`)),
    },
  });
}).catch(fail);
await sipjsGot;

delete result.sipjs.resolve;
delete result.jssip.resolve;
result.ok = result.sipjs.received === 'hello alice' && result.jssip.received === 'hello bob';
console.log(JSON.stringify(result));
await aliceReg.unregister().catch(() => {});
bob.stop();
await alice.stop().catch(() => {});
setTimeout(() => process.exit(result.ok ? 0 : 1), 500);
