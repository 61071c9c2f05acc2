// Checks rdb with the official JavaScript driver (rethinkdb@2.4.2).
// Usage: node js_driver.js PORT PASSWORD
const r = require('rethinkdb');
const port = parseInt(process.argv[2], 10);
const password = process.argv[3] || '';

function check(cond, what) {
  if (!cond) {
    console.error('FAILED: ' + what);
    process.exit(1);
  }
  console.log('ok - ' + what);
}

(async () => {
  const conn = await r.connect({ host: '127.0.0.1', port, user: 'admin', password });
  check((await r.expr(1).run(conn)) === 1, 'r.expr(1)');
  // Many queries in flight on one connection, answered by token.
  const results = await Promise.all(
    [...Array(20).keys()].map((i) => r.range(i).sum().run(conn)));
  check(results.every((v, i) => v === (i * (i - 1)) / 2), 'parallel queries on one connection');
  const cursor = await r.range(100000).run(conn, { maxBatchRows: 1000 });
  const all = await cursor.toArray();
  check(all.length === 100000 && all[99999] === 99999, '100,000-element sequence through batches');
  await r.expr(1).run(conn, { noreply: true });
  await conn.noreplyWait();
  check(true, 'noreply + noreplyWait');
  try {
    await r.expr(1).add('a').run(conn);
    check(false, 'type error raised');
  } catch (e) {
    check(e.name === 'ReqlQueryLogicError', 'runtime error class ' + e.name);
  }
  await conn.close();
  try {
    await r.connect({ host: '127.0.0.1', port, user: 'admin', password: password + 'x' });
    check(false, 'bad password refused');
  } catch (e) {
    check(/Wrong password/.test(e.message), 'bad password refused');
  }
  const c2 = await r.connect({ host: '127.0.0.1', port, user: 'admin', password });
  check((await r.expr('again').run(c2)) === 'again', 'new connection served');
  await c2.close();
  console.log('js driver checks passed');
  // rethinkdb@2.4.2 leaves its connect timer running after a refused handshake (it
  // never clears it on ReqlAuthError); exit instead of waiting for it to fire.
  process.exit(0);
})().catch((e) => {
  console.error('FAILED: ' + e.stack);
  process.exit(1);
});
