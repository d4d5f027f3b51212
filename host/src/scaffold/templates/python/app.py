"""The Levee function `{{name}}`: the component's `handle` export (world `capability`),
connecting handler.py to the host's kv and config imports. componentize-py generates the
`wit_world` bindings from wit/ at build time (build.sh)."""

import handler
import wit_world
from componentize_py_types import Err
from wit_world.imports import kv, store, types


def config(key):
    try:
        return store.get(key)
    except Err as e:
        raise Err(types.Error_Retryable(f"config {key!r}: {e.value}")) from None


class WitWorld(wit_world.WitWorld):
    def handle(self, msg: types.Message) -> None:
        try:
            handler.handle(msg.id, msg.body, kv, config)
        except handler.Permanent as e:
            raise Err(types.Error_Permanent(str(e))) from None
        except handler.Retryable as e:
            raise Err(types.Error_Retryable(str(e))) from None
