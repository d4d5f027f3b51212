// `counter`: a Levee function in JavaScript (componentize-js, default settings, so the component
// imports wasi:http too). Body: a JSON object with an `org`. It counts messages per org at
// `seen/{org}` (read-modify-write: safe, since every invocation is a transaction) and writes
// `js/{message id}` = "{greeting} {org}", the greeting coming from its config
// (`[functions.NAME.config] greeting = "..."`, default "hello"). A body that is not JSON is a
// permanent error (dead-lettered with the reason).
import { get, put } from 'levee:function/kv@0.1.0';
import { get as config } from 'wasi:config/store@0.2.0-rc.1';

const enc = new TextEncoder();
const dec = new TextDecoder();

export function handle(msg) {
  let event;
  try {
    event = JSON.parse(dec.decode(msg.body));
  } catch (e) {
    throw { tag: 'permanent', val: `body is not JSON: ${e}` };
  }
  const org = typeof event.org === 'string' && event.org !== '' ? event.org : 'none';
  const key = `seen/${org}`;
  const before = get(key);
  const n = before ? Number(dec.decode(before)) : 0;
  put(key, enc.encode(String(n + 1)));
  const greeting = config('greeting') ?? 'hello';
  put(`js/${msg.id}`, enc.encode(`${greeting} ${org}`));
}
