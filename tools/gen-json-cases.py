#!/usr/bin/env python3
"""Regenerates crates/compat/tests/fixtures/json_cases.jsonl: how CPython's json.loads
(Python 3.11/3.12 C scanner) answers a set of hand-picked and mutated documents.

Each line: {"doc": <text>, "ok": bool, "msg": str|null, "pos": int|null}.
Only UTF-8 text documents are generated; byte-level rules are tested in Rust."""
import json, random, sys

seeds = [
    '{"compute_type":"k8s","compute_id":"a","compute_config":{"k8s_namespaces":["x","y"]}}',
    '[1, -2.5e3, true, false, null, "s\\n\\u00e9\\ud83d\\ude00", {"a": []}]',
    '{"a": {"b": [1, {"c": "d"}]}, "e": -0, "f": 1E+2, "g": NaN, "h": -Infinity}',
]
hand = [
    '', ' ', '\t\n', 'x', '-', '--1', '-a', '01', '-01', '1.', '1.e5', '1e', '1e+', '1.5e+', '.5',
    '"abc', '"a\\', '"a\\x"', '"\\u12"', '"\\u123"', '"\\u1234', '"\\u12345"', '"\\u12G4"',
    '"\\ud800"', '"\\ud800\\u"', '"\\ud800\\u12G4"', '"\\ud800\\udc00"', '"\\ud800x"', '"\\udc00"',
    '"\\ud800\\ud800"', '"a\x01b"', '"tab\there"', '[', '[1', '[1,', '[1,]', '[,1]', '[1 2]',
    '{', '{"a"', '{"a":', '{"a":1', '{"a":1,', '{"a":1,}', '{,}', '{1:2}', "{'a':1}", '{"a" 1}',
    'nul', 'tru', 'True', 'nan', 'inf', 'Infinity', '-Infinity', 'NaN', '-NaN', '+1', '1 2',
    '{"a":1}x', '[]]', '"é"x', '"日本" 1', '{"é": "ü", oops}', '[1,2,3,,]', '{"a":1 "b":2}',
    ' [ 1 , 2 ] ', '\u00a0[]', '[\u00a0]', '1' * 5000, '0.' + '1' * 400, '1e999',
    '-1e999', '123456789012345678901234567890', '{"a":"\\/"}', '"\\b\\f\\n\\r\\t\\"\\\\"',
]

def answer(doc):
    try:
        json.loads(doc)
        return {"doc": doc, "ok": True, "msg": None, "pos": None}
    except json.JSONDecodeError as e:
        return {"doc": doc, "ok": False, "msg": e.msg, "pos": e.pos}
    except (ValueError, RecursionError):
        return None  # 400 class: tested separately

rng = random.Random(1985)
docs = list(hand)
alphabet = list('{}[]":,-+.0123456789eE \\u"abntfrlsNIaIy\u00e9\u65e5') + ['\\u', '\\ud83d', 'null', 'true']
for _ in range(1500):
    d = list(rng.choice(seeds))
    for _ in range(rng.randint(1, 3)):
        op = rng.randint(0, 2)
        k = rng.randrange(len(d) + 1)
        if op == 0 and d:
            del d[min(k, len(d) - 1)]
        elif op == 1:
            d.insert(k, rng.choice(alphabet))
        else:
            d = d[:k]
    docs.append(''.join(d))
out = sys.stdout
seen = set()
for doc in docs:
    if doc in seen:
        continue
    seen.add(doc)
    a = answer(doc)
    if a is not None:
        out.write(json.dumps(a) + "\n")
