"""Schema pairs and Apache Avro's verdict on each: the reference for the differential test of
orderflow's compatibility checker (schema/avro-compat/tests/differential.rs runs this).

Usage: avro_reference.py [--seed N] [--random N]
Prints one JSON object per line: {"case", "reader", "writer", "reference",
"reference_aliases_qualified"}, where reference is whether
avro.compatibility.ReaderWriterCompatibilityChecker (Apache Avro's Python library) says the
reader can read data written with the writer, and reference_aliases_qualified is its verdict on
the same pair with every alias written fully qualified (which the specification says means the
same). Pairs come from exhaustive small families
(every pair of primitives, logical types, enums, fixed, aliases, unions) and from random schemas
(records nested in records, arrays, maps, unions, enums, fixed, logical types) each paired with
a random mutation of itself, both ways round. The `case` names the family, so the Rust side can
tell a documented deviation from a bug.
"""

import argparse
import copy
import json
import random
import sys

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]
# Writer type -> reader types the specification lets it be promoted to.
PROMOTIONS = {
    "int": ["long", "float", "double"],
    "long": ["float", "double"],
    "float": ["double"],
    "string": ["bytes"],
    "bytes": ["string"],
}


def decimal(precision, scale, base="bytes", name=None, size=None):
    t = {"type": base, "logicalType": "decimal", "precision": precision, "scale": scale}
    if base == "fixed":
        t.update(name=name, size=size)
    return t


LOGICAL = [
    {"type": "int", "logicalType": "date"},
    {"type": "int", "logicalType": "time-millis"},
    {"type": "long", "logicalType": "timestamp-millis"},
    {"type": "long", "logicalType": "timestamp-micros"},
    {"type": "string", "logicalType": "uuid"},
    decimal(10, 2),
    decimal(10, 3),
    decimal(12, 2),
]


def record(name, fields, **extra):
    return {"type": "record", "name": name, "fields": fields, **extra}


def enum(name, symbols, default=None, **extra):
    t = {"type": "enum", "name": name, "symbols": symbols, **extra}
    if default is not None:
        t["default"] = default
    return t


def fixed(name, size, **extra):
    return {"type": "fixed", "name": name, "size": size, **extra}


# --- exhaustive families ----------------------------------------------------------------------


def families():
    for r in PRIMITIVES:
        for w in PRIMITIVES:
            yield "primitive", r, w
    plain = PRIMITIVES + LOGICAL
    for r in LOGICAL:
        for w in plain:
            case = "decimal" if "decimal" in (r.get("logicalType"), (w if isinstance(w, dict) else {}).get("logicalType")) else "logical"
            yield case, r, w
            yield case, w, r
    for size_r, size_w in [(4, 4), (4, 8), (16, 16)]:
        yield "fixed", fixed("F", size_r), fixed("F", size_w)
    yield "fixed", fixed("F", 4), fixed("G", 4)
    yield "fixed-decimal", decimal(10, 2, "fixed", "D", 8), decimal(10, 3, "fixed", "D", 8)
    yield "fixed-decimal", decimal(10, 2, "fixed", "D", 8), decimal(12, 2, "fixed", "D", 8)
    yield "fixed-decimal", decimal(10, 2, "fixed", "D", 8), decimal(10, 2, "fixed", "D", 8)
    symbol_sets = [["A"], ["A", "B"], ["B", "A"], ["A", "B", "C"], ["C"]]
    for rs in symbol_sets:
        for ws in symbol_sets:
            yield "enum", enum("E", rs), enum("E", ws)
            yield "enum-default", enum("E", rs, default=rs[0]), enum("E", ws)
    yield "enum", enum("E", ["A"]), enum("F", ["A"])
    yield "enum", "string", enum("E", ["A"])
    # Named types: unqualified names match; aliases, qualified or relative to the namespace.
    for ns_r, ns_w in [(None, None), ("a", "a"), ("a", "b"), (None, "b")]:
        def ns(t, n):
            return {**t, "namespace": n} if n else t
        base = [{"name": "x", "type": "int"}]
        yield "record-name", ns(record("R", base), ns_r), ns(record("R", base), ns_w)
        yield "record-name", ns(record("S", base), ns_r), ns(record("R", base), ns_w)
        full_w = f"{ns_w}.R" if ns_w else "R"
        yield "record-alias-qualified", ns(record("S", base, aliases=[full_w]), ns_r), ns(record("R", base), ns_w)
        case = "record-alias-relative" if ns_r else "record-alias-qualified"
        yield case, ns(record("S", base, aliases=["R"]), ns_r), ns(record("R", base), ns_w)
        yield "enum-alias", ns(enum("E2", ["A"], aliases=["E"]), ns_r), ns(enum("E", ["A"]), ns_w)
        yield "fixed-alias", ns(fixed("F2", 4, aliases=["F"]), ns_r), ns(fixed("F", 4), ns_w)
    yield "field-alias", record("R", [{"name": "y", "type": "int", "aliases": ["x"]}]), record("R", [{"name": "x", "type": "int"}])
    yield "field-alias", record("R", [{"name": "y", "type": "int"}]), record("R", [{"name": "x", "type": "int", "aliases": ["y"]}])
    branches = ["null", "int", "long", "string", "bytes", enum("E", ["A"]), {"type": "array", "items": "int"}]
    for i in range(len(branches)):
        for j in range(len(branches)):
            yield "union", [branches[i], branches[j]] if i != j else [branches[i]], branches[j]
            yield "union", branches[i], [branches[i], branches[j]] if i != j else [branches[i]]
    linked = lambda t: record("L", [{"name": "v", "type": t}, {"name": "next", "type": ["null", "L"], "default": None}])
    for r in ["int", "long", "string"]:
        for w in ["int", "long", "string"]:
            yield "recursive", linked(r), linked(w)


# --- random schemas and mutations -------------------------------------------------------------


class Gen:
    def __init__(self, rng):
        self.rng = rng

    def schema(self, depth, path):
        rng = self.rng
        roll = rng.random()
        if depth >= 3 or roll < 0.35:
            return rng.choice(PRIMITIVES[1:])
        if roll < 0.45:
            return copy.deepcopy(rng.choice(LOGICAL))
        if roll < 0.62:
            return self.record(depth, path)
        if roll < 0.70:
            symbols = rng.sample(["A", "B", "C", "D"], rng.randint(1, 4))
            return enum(f"E{path}", symbols, default=rng.choice(symbols) if rng.random() < 0.4 else None)
        if roll < 0.76:
            return fixed(f"F{path}", rng.choice([2, 4, 8]))
        if roll < 0.84:
            return {"type": "array", "items": self.schema(depth + 1, path + "a")}
        if roll < 0.90:
            return {"type": "map", "values": self.schema(depth + 1, path + "m")}
        return self.union(depth, path)

    def union(self, depth, path):
        kinds = self.rng.sample(["null", "int", "long", "string", "bytes", "double", "record", "enum"], self.rng.randint(2, 3))
        out = []
        for k in kinds:
            if k == "record":
                out.append(self.record(depth + 1, path + "u"))
            elif k == "enum":
                out.append(enum(f"E{path}u", ["A", "B"]))
            else:
                out.append(k)
        return out

    def record(self, depth, path):
        fields = []
        for i in range(self.rng.randint(1, 4)):
            t = self.schema(depth + 1, f"{path}_{i}")
            f = {"name": f"f{i}", "type": t}
            if self.rng.random() < 0.4:
                f["default"] = default_for(t)
            fields.append(f)
        extra = {"namespace": "orderflow.gen"} if depth == 0 and self.rng.random() < 0.5 else {}
        return record(f"R{path}", fields, **extra)

    def mutate(self, t, depth=0):
        """A copy of `t` with some changes a schema's author might make."""
        rng = self.rng
        t = copy.deepcopy(t)
        if isinstance(t, str):
            if rng.random() < 0.3:
                options = PROMOTIONS.get(t, []) + [w for w, rs in PROMOTIONS.items() if t in rs]
                return rng.choice(options or PRIMITIVES[1:])
            if rng.random() < 0.08:
                return ["null", t] if t != "null" else t
            return t
        if isinstance(t, list):
            roll = rng.random()
            if roll < 0.2 and len(t) > 1:
                t.pop(rng.randrange(len(t)))
            elif roll < 0.35:
                extra = rng.choice(["null", "int", "long", "string", "float"])
                if extra not in t:
                    t.append(extra)
            elif roll < 0.45 and len(t) == 2 and "null" in t:
                return next(b for b in t if b != "null")
            return [self.mutate(b, depth + 1) if isinstance(b, dict) else b for b in t]
        kind = t["type"]
        if "logicalType" in t and kind in ("bytes", "fixed") and t["logicalType"] == "decimal":
            if rng.random() < 0.3:
                t["scale"] = rng.choice([0, 1, 2, 3])
                t["precision"] = max(t["precision"], t["scale"])
            if rng.random() < 0.1:
                t["precision"] += 1
            return t
        if "logicalType" in t:
            return t["type"] if rng.random() < 0.2 else t
        if kind == "record":
            fields = t["fields"]
            roll = rng.random()
            if roll < 0.15 and len(fields) > 1:
                fields.pop(rng.randrange(len(fields)))
            elif roll < 0.3:
                new = {"name": f"g{depth}{len(fields)}", "type": rng.choice(["int", "string", ["null", "string"]])}
                if rng.random() < 0.5:
                    new["default"] = default_for(new["type"])
                fields.append(new)
            elif roll < 0.38:
                f = rng.choice(fields)
                f["aliases"] = [f["name"]]
                f["name"] = f["name"] + "_renamed"
            elif roll < 0.43:
                t["aliases"] = [t["name"]]
                t["name"] = t["name"] + "Renamed"
            for f in fields:
                f["type"] = self.mutate(f["type"], depth + 1)
                # A default follows its field's (possibly changed) type.
                if "default" in f or rng.random() < 0.1:
                    f["default"] = default_for(f["type"])
            return t
        if kind == "enum":
            roll = rng.random()
            if roll < 0.3:
                t["symbols"].append(next(s for s in "ABCDEFG" if s not in t["symbols"]))
            elif roll < 0.5 and len(t["symbols"]) > 1:
                t["symbols"].pop(rng.randrange(len(t["symbols"])))
            elif roll < 0.65:
                t["default"] = rng.choice(t["symbols"])
            if t.get("default") not in t["symbols"]:
                t.pop("default", None)
            return t
        if kind == "fixed":
            if rng.random() < 0.2:
                t["size"] = rng.choice([2, 4, 8, 16])
            return t
        if kind == "array":
            t["items"] = self.mutate(t["items"], depth + 1)
            return t
        if kind == "map":
            t["values"] = self.mutate(t["values"], depth + 1)
            return t
        return t


def default_for(t):
    if isinstance(t, list):
        return default_for(t[0])
    if isinstance(t, str):
        return {"null": None, "boolean": False, "int": 0, "long": 0, "float": 0.0, "double": 0.0, "bytes": "", "string": ""}[t]
    kind = t["type"]
    if t.get("logicalType") == "uuid":
        return "00000000-0000-0000-0000-000000000000"
    if kind == "record":
        return {f["name"]: default_for(f["type"]) for f in t["fields"]}
    if kind == "enum":
        return t["symbols"][0]
    if kind == "fixed":
        return "\u0000" * t["size"]
    if kind == "array":
        return []
    if kind == "map":
        return {}
    return default_for(kind)


# --- the reference ----------------------------------------------------------------------------


def qualify_aliases(t, namespace=None):
    """`t` with every named type's aliases written fully qualified. The specification resolves an
    unqualified alias relative to the type's namespace, so this changes nothing a schema means;
    a reference whose verdict changes with it is reading aliases against the specification."""
    if isinstance(t, list):
        return [qualify_aliases(b, namespace) for b in t]
    if not isinstance(t, dict):
        return t
    t = dict(t)
    kind = t.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        name = t["name"]
        ns = name.rsplit(".", 1)[0] if "." in name else t.get("namespace", namespace)
        if "aliases" in t:
            t["aliases"] = [a if "." in a or not ns else f"{ns}.{a}" for a in t["aliases"]]
        if kind in ("record", "error"):
            t["fields"] = [{**f, "type": qualify_aliases(f["type"], ns)} for f in t["fields"]]
        return t
    if kind == "array":
        t["items"] = qualify_aliases(t["items"], namespace)
    elif kind == "map":
        t["values"] = qualify_aliases(t["values"], namespace)
    elif isinstance(kind, (dict, list)):
        t["type"] = qualify_aliases(kind, namespace)
    return t


def reference(reader, writer):
    r = avro.schema.parse(json.dumps(reader))
    w = avro.schema.parse(json.dumps(writer))
    result = ReaderWriterCompatibilityChecker().get_compatibility(r, w)
    return result.compatibility == SchemaCompatibilityType.compatible


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--random", type=int, default=1500, help="random schemas (two pairs each)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    gen = Gen(rng)
    pairs = list(families())
    for i in range(args.random):
        a = gen.schema(0, str(i))
        b = gen.mutate(a)
        pairs.append(("random", b, a))
        pairs.append(("random", a, b))
    skipped = 0
    for case, r, w in pairs:
        try:
            verdict = reference(r, w)
            qualified = reference(qualify_aliases(r), qualify_aliases(w))
        except Exception:  # noqa: BLE001 - the reference refuses the schema itself
            skipped += 1
            continue
        line = {"case": case, "reader": r, "writer": w, "reference": verdict, "reference_aliases_qualified": qualified}
        print(json.dumps(line))
    print(f"avro_reference: {len(pairs) - skipped} pairs, {skipped} not parsed by the reference", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
