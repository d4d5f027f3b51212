"""Unit tests of handler.py, natively: `python3 -m unittest`."""

import unittest

import handler


class MemoryKv:
    """A dict standing in for the function's kv namespace."""

    def __init__(self):
        self.data = {}

    def get(self, key):
        return self.data.get(key)

    def put(self, key, value):
        self.data[key] = value


def no_config(_key):
    return None


class HandleTest(unittest.TestCase):
    def test_counts_per_org_and_greets(self):
        kv = MemoryKv()
        for i in range(3):
            handler.handle(f"m{i}", b'{"org": "acme"}', kv, no_config)
        self.assertEqual(kv.data["seen/acme"], b"3")
        self.assertEqual(kv.data["greeting/m0"], b"hello acme")

    def test_the_greeting_comes_from_config(self):
        kv = MemoryKv()
        handler.handle("m1", b'{"org": "acme"}', kv, {"greeting": "bonjour"}.get)
        self.assertEqual(kv.data["greeting/m1"], b"bonjour acme")

    def test_bad_bodies_are_permanent_errors(self):
        for body in [b"not json", b"[1]", b'{"org": ""}', b'{"org": "a/b"}']:
            with self.assertRaises(handler.Permanent):
                handler.handle("m1", body, MemoryKv(), no_config)


if __name__ == "__main__":
    unittest.main()
