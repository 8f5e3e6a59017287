"""A small, strict evaluator for the pycep JSON of Portcullis' Bicep files.

The tests need the *values* the templates would produce (rendered KQL, app settings per hosting
plan, storage account names), not just the syntax tree. There is no Bicep CLI in CI, so this
module evaluates the subset of Bicep the templates use:

- parameters (with defaults), variables, string interpolation, ``'''`` strings;
- the functions and operators listed in ``_FUNCTIONS`` / ``Evaluator._operator``;
- resource and module symbols, which evaluate to opaque ``Ref`` placeholders (their runtime
  properties are not knowable offline); ``getSecret()`` yields a ``Ref`` as well.

Anything else raises ``Unsupported``, so a template change that this evaluator cannot follow makes
a test fail loudly instead of passing on a wrong value.

pycep represents identifiers and string literals the same way (plain ``str``). A string is
therefore treated as a reference when it names a lambda variable, parameter, variable, resource
or module of the file; the templates avoid literals that collide with their own symbol names.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycep import BicepParser

_PARSER = BicepParser()


class Unsupported(Exception):
    """The expression uses Bicep this evaluator does not implement."""


@dataclass(frozen=True)
class Ref:
    """Opaque runtime value, e.g. ``funcIdentity.properties.clientId``."""

    path: str

    def __str__(self) -> str:
        return f"<{self.path}>"


@dataclass
class Deployment:
    """Fake deployment context for resourceGroup(), subscription(), environment()."""

    resource_group: str = "portcullis-rg"
    location: str = "westeurope"
    subscription_id: str = "00000000-0000-0000-0000-000000000000"
    tenant_id: str = "11111111-1111-1111-1111-111111111111"
    extra: dict[str, Any] = field(default_factory=dict)


def parse_file(path: Path) -> dict[str, Any]:
    return _PARSER.parse(file_path=path)


def _parse_expression(text: str) -> Any:
    doc = _PARSER.parse(text=f"var x = {text}\n")
    return doc["variables"]["x"]["value"]


def _unquote_key(key: str) -> str:
    if len(key) >= 2 and key[0] == "'" and key[-1] == "'":
        return key[1:-1].replace("\\'", "'")
    return key


def _split_interpolation(text: str) -> list[tuple[bool, str]]:
    """Split 'a${x}b' into [(False,'a'), (True,'x'), (False,'b')], honouring nested braces/quotes."""
    parts: list[tuple[bool, str]] = []
    i = 0
    literal = []
    while i < len(text):
        if text.startswith("${", i):
            if literal:
                parts.append((False, "".join(literal)))
                literal = []
            depth = 1
            j = i + 2
            in_quote = False
            while j < len(text) and depth:
                ch = text[j]
                if in_quote:
                    if ch == "\\":
                        j += 1
                    elif ch == "'":
                        in_quote = False
                elif ch == "'":
                    in_quote = True
                elif ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                j += 1
            if depth:
                raise Unsupported(f"unbalanced interpolation in {text!r}")
            parts.append((True, text[i + 2 : j - 1]))
            i = j
        else:
            literal.append(text[i])
            i += 1
    if literal:
        parts.append((False, "".join(literal)))
    return parts


def _to_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def _fake_unique_string(*parts: Any) -> str:
    digest = hashlib.sha256("|".join(_to_str(p) for p in parts).encode()).hexdigest()
    # uniqueString() returns 13 characters from [a-z0-9].
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(alphabet[int(digest[i : i + 2], 16) % 36] for i in range(0, 26, 2))


def _fake_guid(*parts: Any) -> str:
    digest = hashlib.sha256("|".join(_to_str(p) for p in parts).encode()).hexdigest()
    return f"{digest[0:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


class Evaluator:
    """Evaluates one Bicep file's expressions for a given set of parameter values."""

    def __init__(self, doc: dict[str, Any], params: dict[str, Any] | None = None,
                 deployment: Deployment | None = None) -> None:
        self.doc = doc
        self.deployment = deployment or Deployment()
        self._params_in = dict(params or {})
        unknown = set(self._params_in) - set(doc.get("parameters", {}))
        if unknown:
            raise KeyError(f"unknown parameters: {sorted(unknown)}")
        self._param_values: dict[str, Any] = {}
        self._var_values: dict[str, Any] = {}
        self._evaluating: set[str] = set()
        self._symbols = set(doc.get("resources", {})) | set(doc.get("modules", {}))

    # ---- symbol lookup -------------------------------------------------------------------

    def param(self, name: str) -> Any:
        if name not in self._param_values:
            spec = self.doc["parameters"][name]
            if name in self._params_in:
                self._param_values[name] = self._params_in[name]
            elif "default" in spec:
                self._param_values[name] = self.eval(spec["default"])
            else:
                raise KeyError(f"parameter {name!r} has no default and no value")
        return self._param_values[name]

    def var(self, name: str) -> Any:
        if name not in self._var_values:
            if name in self._evaluating:
                raise Unsupported(f"cyclic variable {name}")
            self._evaluating.add(name)
            value = self.doc["variables"][name]["value"]
            if isinstance(value, dict) and "loop_type" in value:
                raise Unsupported("for-expressions in variables")
            self._var_values[name] = self.eval(value)
            self._evaluating.discard(name)
        return self._var_values[name]

    def _lookup(self, name: str, local: dict[str, Any]) -> tuple[bool, Any]:
        if name in local:
            return True, local[name]
        if name in self.doc.get("parameters", {}):
            return True, self.param(name)
        if name in self.doc.get("variables", {}):
            return True, self.var(name)
        if name in self._symbols:
            return True, Ref(name)
        return False, None

    # ---- evaluation ----------------------------------------------------------------------

    def eval(self, node: Any, local: dict[str, Any] | None = None) -> Any:
        local = local or {}
        if node is None or isinstance(node, (bool, int, float)):
            return node
        if isinstance(node, str):
            return self._string(node, local)
        if isinstance(node, list):
            return [self.eval(item, local) for item in node]
        if isinstance(node, dict):
            if set(node) == {"function"} or ("function" in node and len(node) == 1):
                return self._function(node["function"], local)
            if set(node) == {"operator"}:
                return self._operator(node["operator"], local)
            if "loop_type" in node:
                raise Unsupported("for-expressions")
            return {_unquote_key(k): self.eval(v, local) for k, v in node.items()}
        raise Unsupported(f"node {node!r}")

    def _string(self, text: str, local: dict[str, Any]) -> Any:
        if "${" in text:
            pieces = []
            for is_expr, chunk in _split_interpolation(text):
                if is_expr:
                    pieces.append(_to_str(self.eval(_parse_expression(chunk), local)))
                else:
                    pieces.append(chunk.replace("\\'", "'"))
            return "".join(pieces)
        found, value = self._lookup(text, local)
        if found:
            return value
        return text.replace("\\'", "'")

    def _args(self, fn: dict[str, Any], local: dict[str, Any]) -> list[Any]:
        return [self.eval(v, local) for v in fn.get("parameters", {}).values() if v is not None]

    def _with_property(self, value: Any, fn: dict[str, Any]) -> Any:
        prop = fn.get("property_name")
        return _get(value, prop) if prop else value

    def _function(self, fn: dict[str, Any], local: dict[str, Any]) -> Any:
        kind = fn["type"]
        dep = self.deployment
        if kind == "filter":
            params = fn["parameters"]
            items = self.eval(params["input_array"], local)
            name = params["input_element"]
            return [item for item in items
                    if self.eval(params["expression"], {**local, name: item})]
        if kind == "resource_group":
            if any(v is not None for v in fn["parameters"].values()):
                args = self._args(fn, local)
                return self._with_property({"name": args[-1], "id": f"/rg/{args[-1]}"}, fn)
            rg = {
                "name": dep.resource_group,
                "location": dep.location,
                "id": f"/subscriptions/{dep.subscription_id}/resourceGroups/{dep.resource_group}",
            }
            return self._with_property(rg, fn)
        if kind == "subscription":
            sub = {"subscriptionId": dep.subscription_id, "tenantId": dep.tenant_id,
                   "id": f"/subscriptions/{dep.subscription_id}"}
            return self._with_property(sub, fn)
        if kind == "environment":
            env = {"suffixes": {"storage": "core.windows.net", "keyvaultDns": ".vault.azure.net"},
                   "name": "AzureCloud"}
            return self._with_property(env, fn)
        impl = _FUNCTIONS.get(kind)
        if impl is None:
            raise Unsupported(f"function {kind}")
        return impl(*self._args(fn, local))

    def _operator(self, op: dict[str, Any], local: dict[str, Any]) -> Any:
        kind = op["type"]
        ops = op["operands"]
        if kind == "conditional":
            cond = self.eval(ops["condition"], local)
            return self.eval(ops["true_value"] if _truthy(cond) else ops["false_value"], local)
        if kind == "not":
            return not _truthy(self.eval(ops["bool_value"], local))
        if kind in ("and", "or"):
            left = _truthy(self.eval(ops["operand_1"], local))
            right = _truthy(self.eval(ops["operand_2"], local))
            return (left and right) if kind == "and" else (left or right)
        if kind in ("equals", "not_equals"):
            equal = self.eval(ops["operand_1"], local) == self.eval(ops["operand_2"], local)
            return equal if kind == "equals" else not equal
        if kind == "add":
            return self.eval(ops["operand_1"], local) + self.eval(ops["operand_2"], local)
        if kind == "property_accessor":
            value = self.eval(ops["operand_1"], local)
            for key in _flatten_properties(ops["operand_2"]):
                value = _get(value, key)
            return value
        if kind == "index_accessor":
            value = self.eval(ops["operand_1"], local)
            index = self.eval(ops["operand_2"], local)
            return _get(value, index)
        if kind == "function_accessor":
            target = self.eval(ops["operand_1"], local)
            arg = self.eval(ops["operand_2"], local)
            target_path = target.path if isinstance(target, Ref) else _to_str(target)
            return Ref(f"{target_path}.{ops['func_name']}({_to_str(arg)})")
        raise Unsupported(f"operator {kind}")

    # ---- whole-document helpers ----------------------------------------------------------

    def resource_body(self, name: str) -> dict[str, Any]:
        """The evaluated body of a resource, conditional wrapper removed. Loops are rejected."""
        spec = self.doc["resources"][name]
        body = spec["config"]
        if "loop_type" in body:
            raise Unsupported("looped resource")
        if "condition" in body and "config" in body:
            body = body["config"]
        return self.eval(copy.deepcopy(body))

    def resource_condition(self, name: str) -> bool:
        body = self.doc["resources"][name]["config"]
        if "condition" in body and "config" in body:
            return _truthy(self.eval(body["condition"]))
        return True

    def module_params(self, name: str, item: Any | None = None) -> dict[str, Any]:
        spec = self.doc["modules"][name]
        body = spec["config"]
        local: dict[str, Any] = {}
        if "loop_type" in body:
            detail = body["loop_type"]["detail"]
            local[detail["item_name"]] = item
            body = body["config"]
        return {k: self.eval(v, local) for k, v in body["params"].items()}

    def output(self, name: str) -> Any:
        return self.eval(self.doc["outputs"][name]["value"])


def _flatten_properties(node: Any) -> list[Any]:
    if isinstance(node, dict) and "operator" in node and node["operator"]["type"] == "property_accessor":
        ops = node["operator"]["operands"]
        return _flatten_properties(ops["operand_1"]) + _flatten_properties(ops["operand_2"])
    if isinstance(node, str):
        return [node]
    raise Unsupported(f"property {node!r}")


def _get(value: Any, key: Any) -> Any:
    if isinstance(value, Ref):
        return Ref(f"{value.path}.{key}")
    if isinstance(value, dict):
        return value[key]
    if isinstance(value, list):
        return value[int(key)]
    raise Unsupported(f"cannot access {key!r} on {value!r}")


def _truthy(value: Any) -> bool:
    if isinstance(value, Ref):
        raise Unsupported(f"condition on runtime value {value}")
    return bool(value)


def _empty(value: Any) -> bool:
    if isinstance(value, Ref):
        return False
    return value is None or len(value) == 0


def _concat(*args: Any) -> Any:
    if all(isinstance(a, list) for a in args):
        return [x for a in args for x in a]
    return "".join(_to_str(a) for a in args)


def _union(*args: Any) -> Any:
    if all(isinstance(a, dict) for a in args):
        merged: dict[str, Any] = {}
        for a in args:
            merged.update(a)
        return merged
    if all(isinstance(a, list) for a in args):
        out: list[Any] = []
        for a in args:
            out.extend(x for x in a if x not in out)
        return out
    raise Unsupported("union of mixed types")


def _replace(original: Any, old: Any, new: Any) -> str:
    return _to_str(original).replace(_to_str(old), _to_str(new))


_FUNCTIONS = {
    "concat": _concat,
    "union": _union,
    "replace": _replace,
    "empty": _empty,
    "take": lambda value, n: value[: int(n)],
    "to_lower": lambda s: _to_str(s).lower(),
    "to_upper": lambda s: _to_str(s).upper(),
    "join": lambda items, sep: _to_str(sep).join(_to_str(i) for i in items),
    "length": len,
    "contains": lambda container, item: item in container,
    "json": lambda text: json.loads(text),
    "string": _to_str,
    "int": int,
    "unique_string": _fake_unique_string,
    "guid": _fake_guid,
    "subscription_resource_id": lambda rtype, *names: f"/subscriptions/x/providers/{rtype}/{'/'.join(map(_to_str, names))}",
    "resource_id": lambda *parts: "/".join(map(_to_str, parts)),
    # File contents are not read here: a marker naming the file (tests check the file itself).
    "load_json_content": lambda path, *rest: Ref(f"loadJsonContent({_to_str(path)})"),
    "load_text_content": lambda path, *rest: Ref(f"loadTextContent({_to_str(path)})"),
}


def kql_projected_columns(query: str) -> list[str]:
    """Columns of the final ``| project`` of a KQL query (renames ``a = expr`` give ``a``)."""
    projects = re.findall(r"^\|\s*project\s+(.+)$", query, flags=re.MULTILINE)
    if not projects:
        raise AssertionError("query has no top-level '| project' line")
    columns = []
    for item in projects[-1].split(","):
        item = item.strip()
        columns.append(item.split("=", 1)[0].strip())
    return columns
