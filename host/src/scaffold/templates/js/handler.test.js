// Unit tests of handler.js, natively: `node --test`.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Permanent, handleMessage } from './handler.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

// A Map standing in for the function's kv namespace.
function memoryKv() {
  const data = new Map();
  return { data, get: (k) => data.get(k), put: (k, v) => data.set(k, v) };
}
const noConfig = () => undefined;

test('counts per org and greets', () => {
  const kv = memoryKv();
  for (let i = 0; i < 3; i++) handleMessage(`m${i}`, enc.encode('{"org":"acme"}'), kv, noConfig);
  assert.equal(dec.decode(kv.data.get('seen/acme')), '3');
  assert.equal(dec.decode(kv.data.get('greeting/m0')), 'hello acme');
});

test('the greeting comes from config', () => {
  const kv = memoryKv();
  handleMessage('m1', enc.encode('{"org":"acme"}'), kv, (k) => ({ greeting: 'bonjour' })[k]);
  assert.equal(dec.decode(kv.data.get('greeting/m1')), 'bonjour acme');
});

test('bad bodies are permanent errors', () => {
  for (const body of ['not json', '[1]', 'null', '{"org":""}', '{"org":"a/b"}']) {
    assert.throws(() => handleMessage('m1', enc.encode(body), memoryKv(), noConfig), Permanent);
  }
});
