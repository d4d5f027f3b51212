// The logic of the Levee function `{{name}}`, kept apart from the component's imports so
// `node --test` tests it natively ({{name}}.js connects it to the host).
//
// Body: a JSON object with an `org` (a non-empty string). It counts messages per org at
// `seen/{org}` (read-modify-write: safe, since every invocation is a transaction) and writes
// `greeting/{message id}` = "{greeting} {org}", the greeting coming from the function's config
// (`[functions.{{name}}.config] greeting = "..."`, default "hello").

const enc = new TextEncoder();
const dec = new TextDecoder();

// Never succeeds: the message goes to the dead-letter queue with this reason.
export class Permanent extends Error {}
// Try again later: the message is redelivered after a backoff.
export class Retryable extends Error {}

// Handles one message. `kv` has `get(key) -> Uint8Array | undefined` and
// `put(key, value: Uint8Array)`; `config(key)` returns the manifest's config value (or secret)
// named `key`, or undefined.
export function handleMessage(id, body, kv, config) {
  let event;
  try {
    event = JSON.parse(dec.decode(body));
  } catch (e) {
    throw new Permanent(`body is not JSON: ${e.message}`);
  }
  const org = event !== null && typeof event === 'object' ? event.org : undefined;
  if (typeof org !== 'string' || org === '' || org.includes('/')) {
    throw new Permanent(
      `field "org": expected a non-empty string without '/', got ${JSON.stringify(org)}`,
    );
  }
  const key = `seen/${org}`;
  const before = kv.get(key);
  const count = before ? Number(dec.decode(before)) : 0;
  kv.put(key, enc.encode(String(count + 1)));
  const greeting = config('greeting') ?? 'hello';
  kv.put(`greeting/${id}`, enc.encode(`${greeting} ${org}`));
}
