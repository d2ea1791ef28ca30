// qa_state.js: a Node workload: a 200k-entry Map, a 32 MiB random Buffer
// with its sha256, a setInterval loop and (with "serve") an HTTP server on
// 127.0.0.1 answering GET / with its own verdict.
// Usage: node qa_state.js [serve]
// Report: {"pid":N,"port":P}   Ticks: "tick ok N"; a failed check exits 1.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const http = require('http');

const m = new Map();
for (let i = 0; i < 200000; i++) m.set('k' + i, { v: i, s: 'x'.repeat(i % 50) });
const buf = crypto.randomBytes(32 << 20);
const h0 = crypto.createHash('sha256').update(buf).digest('hex');
function check() {
  if (crypto.createHash('sha256').update(buf).digest('hex') !== h0) return 'buffer changed';
  if (m.size !== 200000 || m.get('k199999').v !== 199999) return 'map changed';
  return null;
}
function emit(s) { fs.writeSync(1, s); }
function start(port) {
  emit(JSON.stringify({ pid: process.pid, port }) + '\n');
  let n = 0;
  setInterval(() => {
    const why = check();
    if (why) { process.stderr.write('qa_state.js: ' + why + '\n'); process.exit(1); }
    emit('tick ok ' + (++n) + '\n');
  }, 50);
}
if (process.argv[2] === 'serve') {
  const srv = http.createServer((q, r) => {
    const why = check();
    r.setHeader('Connection', 'close');
    r.end(JSON.stringify({ ok: why === null, why, pid: process.pid }));
  });
  srv.keepAliveTimeout = 1;
  srv.listen(0, '127.0.0.1', () => start(srv.address().port));
} else {
  start(0);
}
