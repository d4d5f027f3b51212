// The Levee function `{{name}}`: the component's `handle` export (world `capability`),
// connecting handler.js to the host's kv and config imports. Built by build.sh with
// componentize-js from wit/.
import { get, put } from 'levee:function/kv@0.1.0';
import { get as config } from 'wasi:config/store@0.2.0-rc.1';
import { Permanent, Retryable, handleMessage } from './handler.js';

const kv = { get, put };

export function handle(msg) {
  try {
    handleMessage(msg.id, msg.body, kv, config);
  } catch (e) {
    if (e instanceof Permanent) throw { tag: 'permanent', val: e.message };
    if (e instanceof Retryable) throw { tag: 'retryable', val: e.message };
    throw e; // a host error ({tag, val}) or a bug: a bug traps and the message is retried
  }
}
