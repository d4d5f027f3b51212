"""moto's server with DynamoDB calls serialised, as DynamoDB serialises conflicting writes.

moto evaluates a TransactWriteItems' condition expressions and applies its writes without a lock,
so two concurrent transactions on one item can both pass their version checks: 4 threads doing
400 conditional increments through it ended with 399. Levee's exactly-once kv effects on AWS rest
on DynamoDB's serialisable transactions, so the emulator must not lose what DynamoDB would keep.
Every DynamoDB action runs under one lock here; SQS and S3 are untouched (long polls still
overlap). Usage: python moto_server.py -H 127.0.0.1 -p 4566 (the flags of moto_server).
"""

import sys
import threading

from moto.dynamodb.responses import DynamoHandler
from moto.server import main

_LOCK = threading.Lock()
_call_action = DynamoHandler.call_action


def _serialised(self):
    with _LOCK:
        return _call_action(self)


DynamoHandler.call_action = _serialised

if __name__ == "__main__":
    sys.exit(main())
